"""sac_clip_humanoid.py: the textured scene, pose indicators on hand-set poses, an end-to-end run, errors."""

import glob
import os

import numpy as np
import pytest
import torch

from helpers import assert_finite, assert_one_line_error, read_scalars, run_script
from sac_clip_humanoid import make_env, pose_indicators

SCRIPT = "sac_clip_humanoid.py"
CAMERA = (3.0, -10.0, 90.0, 0.8)
EPISODE_LENGTH = 40


@pytest.fixture(scope="module")
def humanoid():
    env = make_env("Humanoid-v5", 0, 1, False, "test", 100, True, 224, CAMERA)()
    yield env
    env.close()


def set_pose(env, torso_height, joints=None):
    """Place the humanoid by hand: torso height (m) and joint angles (rad), at rest."""
    model = env.unwrapped.model
    qpos = env.unwrapped.init_qpos.copy()
    qpos[2] = torso_height
    for joint, angle in (joints or {}).items():
        qpos[model.joint(joint).qposadr[0]] = angle
    env.unwrapped.set_state(qpos, np.zeros(model.nv))


STANDING = dict(torso_height=1.4)
# Thighs upright, shins flat on the floor behind.
KNEELING = dict(torso_height=0.92, joints={"right_knee": -np.pi / 2, "left_knee": -np.pi / 2})
# Left knee on the floor, right thigh forward with its foot on the floor.
HALF_KNEELING = dict(torso_height=0.92, joints={"left_knee": -np.pi / 2, "right_hip_y": -np.pi / 2, "right_knee": -np.pi / 2})


def test_pose_indicators_on_standing_and_kneeling_poses(humanoid):
    set_pose(humanoid, **STANDING)
    standing = pose_indicators(humanoid.unwrapped.data)
    assert standing["torso_height"] == pytest.approx(1.4) and standing["head_height"] == pytest.approx(1.59)
    assert standing["kneeling"] == 0.0
    set_pose(humanoid, **KNEELING)
    kneeling = pose_indicators(humanoid.unwrapped.data)
    assert kneeling["torso_height"] == pytest.approx(0.92) and kneeling["kneeling"] == 1.0
    set_pose(humanoid, **HALF_KNEELING)  # one knee down is not kneeling
    half = pose_indicators(humanoid.unwrapped.data)
    assert half["kneeling"] == 0.0 and half["torso_height"] == pytest.approx(0.92)
    assert humanoid.unwrapped.data.body("right_shin").xpos[2] == pytest.approx(0.92 - 0.465, abs=0.03)  # that knee is at hip height


@pytest.mark.parametrize("pose", [STANDING, KNEELING], ids=["standing", "kneeling"])
def test_textured_scene_frames_the_whole_body(humanoid, pose):
    set_pose(humanoid, **pose)
    frame = humanoid.render()
    assert frame.shape == (224, 224, 3) and frame.dtype == np.uint8
    assert frame.std() > 20
    sky, floor = frame[:20].reshape(-1, 3).mean(0), frame[-20:].reshape(-1, 3).mean(0)
    assert sky[2] > sky[0] + 40 and floor[1] > floor[0] and floor[1] > floor[2]  # blue sky, green floor
    # Which geom each pixel shows: the body's pixels must lie inside the frame with a margin.
    humanoid.get_wrapper_attr("renderer").enable_segmentation_rendering()
    try:
        segmentation = humanoid.render()[..., 0]
    finally:
        humanoid.get_wrapper_attr("renderer").disable_segmentation_rendering()
    floor_id = humanoid.unwrapped.model.geom("floor").id
    body = (segmentation >= 0) & (segmentation != floor_id)
    rows, cols = np.nonzero(body)
    assert body.sum() > 1000
    assert rows.min() > 2 and rows.max() < 221 and cols.min() > 2 and cols.max() < 221
    assert rows.max() - rows.min() > 224 * (0.45 if pose is STANDING else 0.3)  # big enough for CLIP to see the pose
    skin = frame[body].mean(0)
    assert skin[0] > skin[1] > skin[2]  # skin tone on the body


def test_kneeling_body_sits_lower_in_the_frame(humanoid):
    """The camera keeps its look-at height, so the pose shows as the body's extent in the image."""
    tops = []
    for pose in (STANDING, KNEELING):
        set_pose(humanoid, **pose)
        humanoid.get_wrapper_attr("renderer").enable_segmentation_rendering()
        segmentation = humanoid.render()[..., 0]
        humanoid.get_wrapper_attr("renderer").disable_segmentation_rendering()
        rows, _ = np.nonzero((segmentation >= 0) & (segmentation != humanoid.unwrapped.model.geom("floor").id))
        tops.append(rows.min())
    assert tops[1] > tops[0] + 30


@pytest.fixture(scope="module")
def clip_run(tiny_clip_spec, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sac_humanoid")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 240, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 60, "--batch-size", 32, "--capture-video", "--save-model", "--prompt", "a humanoid robot kneeling"]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_reward_pose_indicators_and_losses(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    for tag in ["charts/episodic_clip_return", "pose/torso_height", "pose/head_height", "pose/kneeling", "charts/SPS",
                "losses/qf1_loss", "losses/actor_loss", "losses/ent_coef"]:
        assert_finite(scalars.get(tag))
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 4  # 2 envs x 120 steps / 41 steps each
    assert all(0.0 < h < 1.6 for h in scalars["pose/torso_height"])
    assert all(0.0 <= k <= 1.0 for k in scalars["pose/kneeling"])
    # The CLIP reward of a unit-norm embedding with alpha 0.5 lies in [-1, 1] per step.
    assert all(abs(r) <= EPISODE_LENGTH for r in scalars["charts/episodic_clip_return"])
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.5|" in hyperparameters and "|camera|(3.0, -10.0, 90.0, 0.8)|" in hyperparameters
    assert "torso_height=" in result.stdout and "SPS=" in result.stdout


def test_first_episode_starts_upright_and_falls(clip_run):
    """No early termination: under a random policy the humanoid falls, and the episode goes on."""
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    assert scalars["pose/torso_height"][0] < 1.4  # mean over the episode, below the start height


def test_clip_run_saves_video_and_policy(clip_run):
    cwd, _ = clip_run
    assert glob.glob(os.path.join(cwd, "videos", "*", "*.mp4"))
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "sac_clip_humanoid.cleanrl_model"))
    actor_state, qf1_state, _ = torch.load(model_path)
    assert actor_state["fc_mean.weight"].shape == (17, 256)  # Humanoid has 17 actuators
    assert qf1_state["fc1.weight"].shape[1] == 348 + 17


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "1.2"], "alpha must be in [0, 1]"),
        (["--camera", "0", "-10", "90", "0.8"], "--camera distance"),
        (["--prompt", ""], "target prompts must be a non-empty list"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, args, message):
    result = run_script(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path)
    assert_one_line_error(result, "error:", message)
