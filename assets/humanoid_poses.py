"""Hand-set humanoid poses and the helpers that rest a body on the floor: what the labelled state set
(make_humanoid_states.py), the scene overview, the landscape tool and the tests build on. The training scripts do not
need them; the task predicates they are checked against are clip_envs.TASK_PREDICATES."""

import numpy as np


def standing_and_kneeling_qpos(env):
    """Two hand-set humanoid poses: gymnasium's standing start, and kneeling (thighs upright, shins flat on
    the floor behind, both knees down); the kneeling one meets the kneeling predicate."""
    model, standing = env.unwrapped.model, env.unwrapped.init_qpos.copy()
    kneeling = standing.copy()
    kneeling[2] = 0.92
    for joint in ("right_knee", "left_knee"):
        kneeling[model.joint(joint).qposadr[0]] = -np.pi / 2
    return standing, kneeling


# A hand-set key pose per task: joint angles and torso pitch in degrees (found once by a search over the joints). Rested
# on the floor (`rest_on_floor`), each meets its own task's predicate (and "standing" for the standing tasks) and no other:
# tests/test_humanoid_tasks.py. assets/make_humanoid_states.py varies them into a labelled state set.
KEY_POSES = {
    "standing": {},
    "kneeling": {"right_knee": -90, "left_knee": -90},
    "lotus": dict(
        right_hip_x=5, right_hip_z=-53, right_hip_y=-58, right_knee=-160,
        left_hip_x=-14, left_hip_z=-28, left_hip_y=-32, left_knee=-155, abdomen_y=-1, abdomen_x=11,
    ),
    "arms-raised": dict(right_shoulder1=-85, right_shoulder2=22, right_elbow=-90, left_shoulder1=85, left_shoulder2=-21, left_elbow=-90),
    "splits": dict(
        right_hip_x=-25, right_hip_z=-60, right_hip_y=-70, right_knee=-2, left_hip_x=5, left_hip_z=-60, left_hip_y=-99, left_knee=-7
    ),
    "hands-on-hips": dict(right_shoulder1=40, right_shoulder2=-76, right_elbow=-6, left_shoulder1=-44, left_shoulder2=65, left_elbow=-6),
    "arms-crossed": dict(right_shoulder1=60, right_shoulder2=23, right_elbow=-69, left_shoulder1=-58, left_shoulder2=-39, left_elbow=-84),
    "one-leg": {"right_hip_y": -60, "right_knee": -90},
}  # fmt: skip
KEY_POSE_TORSO_PITCH = {"lotus": -30}


def lowest_point(model, data):
    """Height of the humanoid's lowest surface point (its spheres and capsules)."""
    import mujoco

    low = np.inf
    for geom in range(model.ngeom):
        radius, half_length = model.geom_size[geom][:2]
        if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_SPHERE:
            low = min(low, data.geom_xpos[geom][2] - radius)
        elif model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CAPSULE:
            axis_z = data.geom_xmat[geom][8]
            low = min(low, data.geom_xpos[geom][2] - abs(axis_z) * half_length - radius)
    return low


def rest_on_floor(env, joints, torso_quat=(1.0, 0.0, 0.0, 0.0), lift=0.0):
    """Set the humanoid at rest in a pose (joint angles in degrees, torso orientation), its lowest point `lift` metres
    above the floor (0: resting on it)."""
    model = env.unwrapped.model
    qpos = env.unwrapped.init_qpos.copy()
    qpos[3:7] = torso_quat
    for joint, angle in joints.items():
        qpos[model.joint(joint).qposadr[0]] = np.radians(angle)
    env.unwrapped.set_state(qpos, np.zeros(model.nv))
    qpos[2] -= lowest_point(model, env.unwrapped.data) - lift
    env.unwrapped.set_state(qpos, np.zeros(model.nv))


def deepest_penetration(data):
    """How far (m) any two touching geoms, the floor included, are inside each other."""
    return -min([data.contact[i].dist for i in range(data.ncon)] or [0.0])
