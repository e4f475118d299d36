"""Write assets/humanoid-states.npz: labelled humanoid states for judging a CLIP as a reward model without training
(clip_reward_epic.py), the automatic stand-in for the paper's human-labelled states (Fig. 4, Fig. 7).

For each of the eight tasks, variations of its hand-set key pose (humanoid_poses.KEY_POSES): every joint moved by a random
angle, the body turned and tilted a little, rested on the floor, then settled by the simulator for a few steps with
zero torques. A variation is kept only if it is physically plausible afterwards: resting on the floor (no floating) and
nothing inside the floor or another limb. States from random-policy rollouts from the standing start add the falls,
slumps and sprawls an untrained policy visits. Every state is labelled with all eight task predicates
(clip_envs.task_success) after settling, so a variation of one task's pose that no longer meets it counts as "other".

Stored small: qpos, qvel, labels, where each state came from; frames are rendered on demand in the default scene.

    python assets/make_humanoid_states.py       # a few seconds; --overwrite to replace the committed file
"""

import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clip_envs  # noqa: E402
from assets import humanoid_poses  # noqa: E402


@dataclass
class Args:
    output: str = os.path.join(ROOT, "assets", "humanoid-states.npz")
    """where to write the state set"""
    seed: int = 0
    """seed of the variations and rollouts"""
    variations: int = 40
    """variations of each task's key pose that still meet the task, and at most as many near misses that do not"""
    joint_noise: float = 8.0
    """standard deviation of the random change of every joint angle, degrees"""
    rollouts: int = 16
    """random-policy rollouts from the standing start"""
    rollout_length: int = 100
    """env steps per rollout (the training episode's length)"""
    rollout_every: int = 5
    """keep every this many steps of a rollout"""
    settle_steps: int = 3
    """env steps (5 physics steps each, zero torques) that settle a variation before it is labelled"""
    overwrite: bool = False
    """replace an existing --output"""


def turn(yaw_degrees, pitch_degrees):
    """Torso quaternion: turned about the vertical, then pitched about the y axis."""
    yaw, pitch = np.radians(yaw_degrees) / 2, np.radians(pitch_degrees) / 2
    return np.array(
        [np.cos(yaw) * np.cos(pitch), -np.sin(yaw) * np.sin(pitch), np.cos(yaw) * np.sin(pitch), np.sin(yaw) * np.cos(pitch)]
    )


def variation(env, task, rng, args, blend=1.0):
    """A random variation of the task's key pose, rested on the floor and settled; None if it is not plausible.
    blend < 1 moves every joint and the torso's pitch only that fraction of the way from the standing start to the pose."""
    model = env.unwrapped.model
    joints = {name: blend * angle for name, angle in humanoid_poses.KEY_POSES[task].items()}
    for joint in range(1, model.njnt):  # joint 0 is the free root
        name, (low, high) = model.joint(joint).name, np.degrees(model.jnt_range[joint])
        joints[name] = float(np.clip(joints.get(name, 0.0) + rng.normal(0, args.joint_noise), low, high))
    pitch = blend * humanoid_poses.KEY_POSE_TORSO_PITCH.get(task, 0.0) + rng.normal(0, 3.0)
    humanoid_poses.rest_on_floor(env, joints, turn(rng.uniform(-30, 30), pitch))
    return settled(env, args)


def settled(env, args):
    """(qpos, qvel) after args.settle_steps steps with zero torques of a body just rested on the floor; None if it is not
    plausible before or after (a limb inside another or the floor, or the body floating)."""
    model, data = env.unwrapped.model, env.unwrapped.data
    if humanoid_poses.deepest_penetration(data) > 0.01:
        return None
    for _ in range(args.settle_steps):
        env.step(np.zeros(model.nu))
    if humanoid_poses.deepest_penetration(data) > 0.01 or humanoid_poses.lowest_point(model, data) > 0.02:
        return None
    return data.qpos.copy(), data.qvel.copy()


if __name__ == "__main__":
    args = tyro.cli(Args)
    if os.path.exists(args.output) and not args.overwrite:
        sys.exit(f"error: {args.output} exists: pass --overwrite to replace it")
    clip_envs.use_headless_mujoco_gl()
    rng = np.random.default_rng(args.seed)
    env = clip_envs.make_humanoid("Humanoid-v5", 10**6, None, render_size=32)
    env.reset(seed=args.seed)
    tasks = list(clip_envs.HUMANOID_TASKS)
    qpos, qvel, origin, tried = [], [], [], 0
    for task in tasks:
        meets, misses = 0, 0
        while meets < args.variations:
            tried += 1
            state = variation(env, task, rng, args)
            if state is None:
                continue
            if clip_envs.task_success(env.unwrapped.data)[task]:
                meets += 1
            elif misses < args.variations:
                misses += 1
            else:
                continue
            qpos.append(state[0]), qvel.append(state[1]), origin.append(f"{task} pose")
    env.action_space.seed(args.seed)
    for rollout in range(args.rollouts):
        env.reset(seed=args.seed + 1 + rollout)
        for step in range(1, args.rollout_length + 1):
            env.step(env.action_space.sample())
            if step % args.rollout_every == 0:
                qpos.append(env.unwrapped.data.qpos.copy()), qvel.append(env.unwrapped.data.qvel.copy())
                origin.append("random policy")

    labels = []
    for position, velocity in zip(qpos, qvel):
        env.unwrapped.set_state(position, velocity)
        met = clip_envs.task_success(env.unwrapped.data)
        labels.append([met[task] for task in tasks])
    env.close()
    labels = np.array(labels, dtype=np.uint8)
    np.savez_compressed(
        args.output, qpos=np.array(qpos), qvel=np.array(qvel), labels=labels, tasks=np.array(tasks), origin=np.array(origin)
    )
    print(f"wrote {args.output}: {len(qpos)} states from {tried} variations and {args.rollouts} rollouts")
    for i, task in enumerate(tasks):
        own = [o == f"{task} pose" for o in origin]
        print(f"{task:>14}: {labels[:, i].sum():4d} states meet it ({labels[own, i].mean():.0%} of its own pose's variations)")
