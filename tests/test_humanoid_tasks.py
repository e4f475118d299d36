"""The eight humanoid tasks' success predicates (clip_envs.TASK_PREDICATES), on hand-set poses.

Each pose is set through qpos (joint angles found once by a search over the joints, kept here as
plain numbers), then lowered until its lowest point rests on the floor: no floating, and no part
of the body inside the floor or inside another part (checked from MuJoCo's contacts). Poses that
rest on the floor are also stepped by the physics for a moment and must still meet their task.
"""

import mujoco
import numpy as np
import pytest

import clip_envs
from assets import humanoid_poses


def pitch(degrees):
    """Quaternion of the torso pitched by `degrees` about the y axis (negative leans back)."""
    return [np.cos(np.radians(degrees) / 2), 0.0, np.sin(np.radians(degrees) / 2), 0.0]


POSES, TORSO_PITCH = humanoid_poses.KEY_POSES, humanoid_poses.KEY_POSE_TORSO_PITCH
# Tasks that are standing poses also meet "standing".
ALSO_STANDING = {"arms-raised", "hands-on-hips", "arms-crossed", "one-leg"}
HANDS_TOUCHING = dict(right_shoulder1=41, right_shoulder2=-1, right_elbow=-36, left_shoulder1=-42, left_shoulder2=4, left_elbow=-34)


@pytest.fixture(scope="module")
def humanoid():
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.reset(seed=0)
    yield env
    env.close()


def place(env, joints, torso_pitch=0.0, lift=0.0):
    """Set the pose (degrees), rest it on the floor (plus `lift` metres), and return the model and data."""
    humanoid_poses.rest_on_floor(env, joints, pitch(torso_pitch), lift)
    return env.unwrapped.model, env.unwrapped.data


deepest_penetration = humanoid_poses.deepest_penetration


@pytest.mark.parametrize("task", list(POSES))
def test_each_task_pose_meets_its_task_and_no_other(humanoid, task):
    _, data = place(humanoid, POSES[task], TORSO_PITCH.get(task, 0))
    assert deepest_penetration(data) < 0.01  # physically plausible: nothing inside the floor or another limb
    met = {name for name, value in clip_envs.task_success(data).items() if value}
    assert met == {task} | ({"standing"} if task in ALSO_STANDING else set())


@pytest.mark.parametrize("task", ["kneeling", "lotus", "splits"])
def test_poses_on_the_floor_stay_put_when_the_physics_runs(humanoid, task):
    """Resting, not floating: a few physics steps (zero torques) keep the task met and the torso where it was."""
    _, data = place(humanoid, POSES[task], TORSO_PITCH.get(task, 0))
    height = data.body("torso").xpos[2]
    for _ in range(3):  # 3 env steps = 15 physics steps = 45 ms
        humanoid.step(np.zeros(17))
    assert clip_envs.task_success(data)[task] == 1.0
    assert abs(data.body("torso").xpos[2] - height) < 0.05


def test_kneeling_in_the_air_is_not_kneeling(humanoid):
    _, data = place(humanoid, POSES["kneeling"], lift=0.3)
    assert clip_envs.task_success(data)["kneeling"] == 0.0


def test_hands_touching_are_not_arms_crossed(humanoid):
    _, data = place(humanoid, HANDS_TOUCHING)
    left, right = data.geom("left_hand").xpos, data.geom("right_hand").xpos
    assert np.linalg.norm(left - right) < 0.09  # the two 4 cm hands touch in front of the chest
    assert deepest_penetration(data) < 0.01
    met = clip_envs.task_success(data)
    assert met["arms-crossed"] == 0.0 and met["standing"] == 1.0


def test_a_fallen_body_meets_no_standing_task(humanoid):
    _, data = place(humanoid, POSES["arms-raised"], torso_pitch=-90)  # the arms-raised pose lying on its back
    met = clip_envs.task_success(data)
    assert not any(met[task] for task in ("standing", *ALSO_STANDING, "kneeling"))


def test_predicates_do_not_depend_on_where_the_body_stands_or_faces(humanoid):
    model, data = humanoid.unwrapped.model, humanoid.unwrapped.data
    for task in ("arms-crossed", "splits", "lotus"):
        place(humanoid, POSES[task], TORSO_PITCH.get(task, 0))
        qpos = data.qpos.copy()
        qpos[:2] += [3.0, -2.0]  # walked away ...
        turn = [np.cos(np.radians(120) / 2), 0, 0, np.sin(np.radians(120) / 2)]  # ... and turned 120 degrees
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, np.array(turn), qpos[3:7])
        qpos[3:7] = quat
        humanoid.unwrapped.set_state(qpos, np.zeros(model.nv))
        assert clip_envs.task_success(data)[task] == 1.0, task


def test_the_kneeling_pose_of_the_landscape_and_overview_meets_the_kneeling_task(humanoid):
    standing, kneeling = humanoid_poses.standing_and_kneeling_qpos(humanoid)
    humanoid.unwrapped.set_state(kneeling, np.zeros(humanoid.unwrapped.model.nv))
    assert clip_envs.task_success(humanoid.unwrapped.data)["kneeling"] == 1.0
    humanoid.unwrapped.set_state(standing, np.zeros(humanoid.unwrapped.model.nv))
    assert clip_envs.task_success(humanoid.unwrapped.data)["kneeling"] == 0.0


@pytest.mark.parametrize("task", list(POSES))
def test_the_dense_score_is_highest_at_the_task_pose_and_lower_for_a_fallen_body(humanoid, task):
    """clip_envs.task_scores, the ground truth a reward can be made of: 1 exactly where the task holds, and higher as the
    body nears the pose (the key pose's joints halfway to a fallen body's score above the fallen body)."""
    _, data = place(humanoid, POSES[task], TORSO_PITCH.get(task, 0))
    at_pose = clip_envs.task_scores(data)
    assert at_pose[task] == 1.0
    met = {name for name, value in clip_envs.task_success(data).items() if value}
    assert {name for name, score in at_pose.items() if score == 1.0} == met
    key_qpos = data.qpos.copy()
    _, data = place(humanoid, POSES["arms-raised"], torso_pitch=-90)  # lying on its back
    fallen = clip_envs.task_scores(data)[task]
    assert 0.0 < fallen < 1.0, fallen
    halfway = key_qpos.copy()  # where the key pose stands, its joints halfway to the fallen body's
    halfway[7:] = 0.5 * (key_qpos[7:] + data.qpos[7:])
    humanoid.unwrapped.set_state(halfway, np.zeros(humanoid.unwrapped.model.nv))
    assert clip_envs.task_scores(humanoid.unwrapped.data)[task] > fallen, task


def test_the_ground_truth_reward_of_the_training_env_is_highest_at_each_key_pose_and_lower_fallen():
    """sac_clip_humanoid.py --reward ground-truth learns from its envs' reward: the task's score after each step, at its
    maximum 1 at the task's key pose and lower for a fallen body (and no frame rendered for it)."""
    import sac_clip_humanoid

    for task in POSES:
        scene = dict(episode_length=100, textures=None, render_size=32, task=task)
        env = sac_clip_humanoid.make_env("Humanoid-v5", 0, 0, False, "test", False, **scene)()
        env.reset(seed=0)
        humanoid_poses.rest_on_floor(env, POSES[task], pitch(TORSO_PITCH.get(task, 0)))
        _, at_pose, _, _, info = env.step(np.zeros(17))
        humanoid_poses.rest_on_floor(env, POSES["arms-raised"], pitch(-90))  # lying on its back
        _, fallen, _, _, _ = env.step(np.zeros(17))
        env.close()
        assert at_pose == 1.0 and 0.0 < fallen < 1.0, (task, at_pose, fallen)
        assert "frame" not in info
