"""Train the tiny humanoid CLIP: a TEST AND DEMO ASSET, never a model to train real agents with.

Renders the default humanoid scene (the paper's textures and camera, at --render-size; each state once with MuJoCo's
default render quality and once with the cheap one of CPU experiments, --render-quality 512 0) in states made like
assets/humanoid-states.npz: varied key poses of the eight tasks, near misses (the key poses varied more), states on the
way from the standing start to each key pose, kneeling-like states (legs and torso bent at random: the poses a policy
learning to kneel passes, most of them not kneeling) and random-policy states, with their own seeds (so the committed
state set stays unseen). Each frame's caption target is weighted by the tasks' dense ground-truth scores
(clip_envs.task_scores: 1 where a task holds, less the further its predicate is from holding) over the Table 3 prompts,
and "a humanoid robot lying on the floor" takes what the best score leaves. Both directions of CLIP's loss are trained:
each frame picks its captions, and each caption picks its frames (weighted by those targets to the power
--caption-sharpness), so a task's prompt rewards a body nearer its pose more, by a margin that grows with how much
nearer, as the MountainCar CLIP's goal prompt rewards a car nearer the flag. The baseline "a humanoid robot" is pulled
to the mean frame (see tiny_clip.py).

    python clip_reward_epic.py --env humanoid --render-size 128 --clip-model local-dir:assets/tiny-humanoid-clip-for-tests

Seeded; ~15 minutes on 2 CPU cores (rendering ~6, training ~8). It will not replace the committed model unless told to:

    python assets/make_tiny_humanoid_clip.py --overwrite
"""

import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

ASSETS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(ASSETS))
sys.path.insert(0, ASSETS)
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402
from clip_reward_epic import epic_distance  # noqa: E402
import tiny_clip  # noqa: E402
from make_humanoid_states import settled, turn, variation  # noqa: E402
from assets import humanoid_poses  # noqa: E402

TASKS = list(clip_envs.HUMANOID_TASKS)
NONE_CAPTION = "a humanoid robot lying on the floor"
CAPTIONS = [clip_envs.HUMANOID_TASKS[task] for task in TASKS] + [NONE_CAPTION]
BASELINE_CAPTION = clip_envs.PROMPTS["humanoid"][1]


@dataclass
class Args:
    output_dir: str = os.path.join(ASSETS, "tiny-humanoid-clip-for-tests")
    """where to write open_clip_config.json and the weights"""
    overwrite: bool = False
    """replace a model already in --output-dir (the committed test asset by default)"""
    seed: int = 100
    """seed for states, initialisation and batches (assets/humanoid-states.npz uses 0: these states are others)"""
    variations: int = 150
    """plausible variations of each task's key pose"""
    joint_noise: float = 10.0
    """standard deviation of the random change of every joint angle, degrees"""
    near_misses: int = 100
    """variations of each task's key pose with --near-miss-noise, most of them missing the task"""
    near_miss_noise: float = 30.0
    """standard deviation of the joint angles' change in a near miss, degrees"""
    transitions: int = 100
    """states of each task on the way from the standing start to its key pose (a uniform fraction of the way, varied)"""
    crouches: int = 800
    """kneeling-like states: legs and torso bent at random (kneeling upright, leaning back on the heels, crouching, one knee up)"""
    rollouts: int = 60
    """random-policy rollouts from the standing start"""
    rollout_every: int = 3
    """keep every this many steps of a rollout (100 steps each)"""
    settle_steps: int = 3
    """env steps with zero torques that settle a variation"""
    render_size: int = 128
    """frame size and the tiny CLIP's input (a multiple of 8), so train SAC with the same --render-size"""
    steps: int = 1000
    """optimiser steps"""
    batch_size: int = 128
    """frames per step"""
    learning_rate: float = 5e-4
    """peak AdamW learning rate (linear warm-up, cosine decay)"""
    caption_sharpness: float = 10.0
    """power of the caption targets that weight the frames each caption picks: how much more a nearer pose is rewarded"""
    score_scale: float = 0.08
    """the task scores' SCORE_SCALE in the caption targets (the scores' own: 0.25): smaller makes a near miss score further
    below its pose"""


def varied_key_poses(env, rng, args, per_task, on_the_way=False):
    """(qpos, qvel) of `per_task` plausible variations of each task's key pose (joints varied by args.joint_noise);
    on_the_way: each a random fraction of the way from the standing start to the pose."""
    qpos, qvel = [], []
    for task in TASKS:
        kept = 0
        while kept < per_task:
            state = variation(env, task, rng, args, blend=rng.uniform() if on_the_way else 1.0)
            if state is not None:
                qpos.append(state[0]), qvel.append(state[1])
                kept += 1
    return qpos, qvel


def crouch(env, rng, args):
    """A random kneeling-like state, rested on the floor and settled; None if it is not plausible. The body's own way down:
    knees (mostly bent alike) and hips bent anywhere in their range, the torso pitched up to 60 degrees either way, so that
    kneeling upright sits among the poses a policy passes on the way (leaning back on the heels, crouching, leaning forward,
    one knee up)."""
    model = env.unwrapped.model
    knee, hip = rng.uniform(-160, -20), rng.uniform(-110, 20)
    joints = {name: rng.normal(0, args.joint_noise) for name in (model.joint(j).name for j in range(1, model.njnt))}
    for side in ("left", "right"):
        alike = rng.uniform() < 0.7
        joints[f"{side}_knee"] = knee + rng.normal(0, 10) if alike else rng.uniform(-160, -2)
        joints[f"{side}_hip_y"] = hip + rng.normal(0, 10) if alike else rng.uniform(-110, 20)
    joints["abdomen_y"] = rng.uniform(-50, 20)
    for joint in range(1, model.njnt):
        low, high = np.degrees(model.jnt_range[joint])
        joints[model.joint(joint).name] = float(np.clip(joints[model.joint(joint).name], low, high))
    humanoid_poses.rest_on_floor(env, joints, turn(rng.uniform(-30, 30), rng.uniform(-60, 60)))
    return settled(env, args)


def states(args, rng, env):
    """(qpos, qvel) of varied key poses, near misses, states on the way to the key poses, kneeling-like states and
    random-policy states."""
    qpos, qvel = varied_key_poses(env, rng, args, args.variations)
    near_misses = varied_key_poses(env, rng, dataclasses.replace(args, joint_noise=args.near_miss_noise), args.near_misses)
    on_the_way = varied_key_poses(env, rng, args, args.transitions, on_the_way=True)
    qpos, qvel = qpos + near_misses[0] + on_the_way[0], qvel + near_misses[1] + on_the_way[1]
    for _ in range(args.crouches):
        state = None
        while state is None:
            state = crouch(env, rng, args)
        qpos.append(state[0]), qvel.append(state[1])
    env.action_space.seed(args.seed)
    for rollout in range(args.rollouts):
        env.reset(seed=args.seed + 1 + rollout)
        for step in range(1, 101):
            env.step(env.action_space.sample())
            if step % args.rollout_every == 0:
                qpos.append(env.unwrapped.data.qpos.copy()), qvel.append(env.unwrapped.data.qvel.copy())
    return qpos, qvel


def rescaled(scores, score_scale):
    """Task scores exp(-shortfall / SCORE_SCALE) made exp(-shortfall / score_scale): still 1 where a task holds."""
    return scores ** (clip_envs.SCORE_SCALE / score_scale)


def caption_weights(scores):
    """Unnormalised caption targets (N, 9) from the tasks' scores (N, 8): each task's score, NONE_CAPTION 1 - the best."""
    return np.concatenate([scores, 1.0 - scores.max(axis=1, keepdims=True)], axis=1).astype(np.float64)


def caption_targets(scores):
    """Class probabilities (N, 9) of each frame's captions."""
    weights = caption_weights(scores)
    return torch.as_tensor(weights / weights.sum(axis=1, keepdims=True), dtype=torch.float32)


def frame_weights(scores, sharpness):
    """Weights (N, 9) of the frames each caption picks: its targets to the power `sharpness`, kept above zero."""
    return torch.as_tensor(np.maximum(caption_weights(scores), 1e-3) ** sharpness, dtype=torch.float32)


def render(qpos, qvel, args, quality=None):
    """Raw uint8 frames of the states in the default scene, the labels of all eight tasks (N, 8) and their scores."""
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    env = clip_envs.make_humanoid("Humanoid-v5", 100, textures, args.render_size, quality=quality)
    env.reset(seed=args.seed)
    frames, labels, scores = [], [], []
    for position, velocity in zip(qpos, qvel):
        env.unwrapped.set_state(position, velocity)
        frames.append(env.render())
        met, score = clip_envs.task_success(env.unwrapped.data), clip_envs.task_scores(env.unwrapped.data)
        labels.append([met[task] for task in TASKS]), scores.append([score[task] for task in TASKS])
    env.close()
    return np.stack(frames), np.array(labels, dtype=np.float32), np.array(scores, dtype=np.float32)


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.render_size < 32 or args.render_size % 8:
        sys.exit(f"error: --render-size must be a multiple of 8 and at least 32, got {args.render_size}")
    if args.transitions < 0 or not args.caption_sharpness > 0 or not args.score_scale > 0:
        sys.exit(f"error: --transitions must be >= 0, --caption-sharpness > 0 and --score-scale > 0, got "
                 f"{args.transitions}, {args.caption_sharpness}, {args.score_scale}")  # fmt: skip
    tiny_clip.check_output_dir(args.output_dir, args.overwrite)
    clip_envs.use_headless_mujoco_gl()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, tokenizer = tiny_clip.new_model(args.render_size)
    preprocess = clip_reward.FramePreprocessor(model)  # the reward model's own preprocessing

    start = time.time()
    env = clip_envs.make_humanoid("Humanoid-v5", 10**6, None, render_size=32)
    env.reset(seed=args.seed)
    qpos, qvel = states(args, rng, env)
    env.close()
    frames, labels, scores = render(qpos, qvel, args)
    cheap_frames = render(qpos, qvel, args, quality=(512, 0))[0]
    order = rng.permutation(len(frames))
    test, train = order[: len(order) // 10], order[len(order) // 10 :]
    train_frames = np.concatenate([frames[train], cheap_frames[train]])  # both renders of each training state
    images = preprocess(train_frames)
    print(f"rendered {len(frames)} states in {time.time() - start:.0f}s; frames meeting each task: "
          + ", ".join(f"{task} {int(labels[:, i].sum())}" for i, task in enumerate(TASKS)))  # fmt: skip

    train_scores = rescaled(np.concatenate([scores[train], scores[train]]), args.score_scale)
    groups = [(CAPTIONS, caption_targets(train_scores), frame_weights(train_scores, args.caption_sharpness))]
    tiny_clip.train(model, tokenizer, images, groups, BASELINE_CAPTION, args.steps, args.batch_size, args.learning_rate, start)
    # How well each task's Table 3 prompt separates the held-out frames that meet it (EPIC distance, alpha 0).
    for i, task in enumerate(TASKS):
        reward_model = clip_reward.CLIPReward(model, tokenizer, [CAPTIONS[i]], [BASELINE_CAPTION], alpha=0.0)
        rewards, cheap_rewards = reward_model(frames[test]).numpy(), reward_model(cheap_frames[test]).numpy()
        print(f"{task:>14}: EPIC {epic_distance(rewards, labels[test, i]):.3f} on held-out frames "
              f"({epic_distance(cheap_rewards, labels[test, i]):.3f} cheap render); "
              f"Pearson with the task's score {np.corrcoef(rewards, scores[test, i])[0, 1]:.2f}")  # fmt: skip
    tiny_clip.save(model, args.output_dir, "tiny humanoid CLIP for tests and demos only")
