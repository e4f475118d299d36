"""Train the tiny Pendulum CLIP: a TEST AND DEMO ASSET, never a model to train real agents with.

Renders gymnasium's Pendulum-v1 (its own drawing, the frame the generic script sac_clip_continuous_action.py hands to
CLIP) at random angles and torques, resized whole to 64 px as `--render-size 64` does in the env workers, captions each
frame by where the pendulum points ("a pendulum hanging straight down", ..., "a pendulum pointing straight up"), and
trains a tiny open_clip CLIP on them on the CPU (see tiny_clip.py).

A frame's caption target is its own caption, mixed with the captions of angles at a similar height of the pendulum's
tip. So the embedding orders frames by height, and the goal prompt's reward rises as the pendulum swings up: a shaped
reward that SAC learns from in minutes. The opposite prompt, "a pendulum hanging straight down", rewards hanging. The
baseline "a pendulum" is pulled to the mean frame (goal-baseline regularisation needs that).

    python sac_clip_continuous_action.py --task pendulum-upright --render-size 64 \\
        --clip-model local-dir:assets/tiny-pendulum-clip-for-tests

Seeded; ~5 minutes on 2 CPU cores. It will not replace the committed model unless told to:

    python assets/make_tiny_pendulum_clip.py --overwrite
"""

import os
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402
import tiny_clip  # noqa: E402

UPRIGHT, DOWN = clip_envs.ENV_TASKS["pendulum-upright"], clip_envs.ENV_TASKS["pendulum-down"]
# Captions by the angle from upright (radians, either side), with the largest angle of each; the goal prompts at the ends.
ANGLE_CAPTIONS = [
    (UPRIGHT.prompt, clip_envs.PENDULUM_UPRIGHT),
    ("a pendulum tilted a little from upright", 1.0),
    ("a pendulum pointing sideways", 2.1),
    ("a pendulum tilted a little from hanging down", np.pi - clip_envs.PENDULUM_UPRIGHT),
    (DOWN.prompt, np.inf),
]
BASELINE_CAPTION = UPRIGHT.baseline_prompt
FRAME_SIZE = 64  # what sac_clip_continuous_action.py --render-size 64 hands to CLIP


@dataclass
class Args:
    output_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-pendulum-clip-for-tests")
    """where to write open_clip_config.json and the weights"""
    overwrite: bool = False
    """replace a model already in --output-dir (the committed test asset by default)"""
    seed: int = 0
    """seed for states, initialisation and batches"""
    num_frames: int = 4000
    """training frames rendered at random angles"""
    steps: int = 600
    """optimiser steps"""
    batch_size: int = 128
    """frames per step"""
    learning_rate: float = 5e-4
    """peak AdamW learning rate (linear warm-up, cosine decay)"""
    height_weight: float = 0.7
    """share of a frame's caption target given to captions of angles at a similar height"""
    height_scale: float = 0.3
    """how fast a caption's share falls with the height difference (exp(-difference / scale), tip height -1..1)"""


def angle_from_upright(theta):
    """|theta| wrapped to [0, pi]: 0 upright, pi hanging down."""
    return np.abs((np.asarray(theta) + np.pi) % (2 * np.pi) - np.pi)


def angle_label(theta):
    """Index into ANGLE_CAPTIONS."""
    ends = np.array([end for _, end in ANGLE_CAPTIONS])
    return np.searchsorted(ends, angle_from_upright(theta), side="left")


def caption_targets(theta, args):
    """Class probabilities (N, C): the frame's own caption, mixed with captions at a similar tip height (cos theta)."""
    ends = np.array([end for _, end in ANGLE_CAPTIONS[:-1]])
    middles = (np.concatenate([[0.0], ends]) + np.concatenate([ends, [np.pi]])) / 2
    height_gap = np.abs(np.cos(theta)[:, None] - np.cos(middles)[None, :])
    similar = np.exp(-height_gap / args.height_scale)
    similar /= similar.sum(axis=1, keepdims=True)
    own = np.eye(len(ANGLE_CAPTIONS))[angle_label(theta)]
    return torch.as_tensor((1 - args.height_weight) * own + args.height_weight * similar, dtype=torch.float32)


def random_angles(rng, n):
    """Uniform around the circle, plus a quarter within reach of each end so that both goal captions have frames."""
    theta = rng.uniform(-np.pi, np.pi, n)
    near_end = rng.random(n) < 0.25
    theta[near_end] = rng.normal(0.0, 0.5, near_end.sum()) + np.pi * (rng.random(near_end.sum()) < 0.5)
    return theta


def render_angles(theta, rng, chunk=256):
    """Frames (N, 64, 64, 3) uint8 of Pendulum-v1 at each angle, each with a random last torque (its arrow), or none."""
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for angle in theta:
        env.unwrapped.state = np.array([angle, 0.0])
        env.unwrapped.last_u = None if rng.random() < 0.1 else rng.uniform(-2.0, 2.0)
        frames.append(clip_envs.square_frame(env.render(), FRAME_SIZE))
    env.close()
    return np.stack(frames)


if __name__ == "__main__":
    args = tyro.cli(Args)
    tiny_clip.check_output_dir(args.output_dir, args.overwrite)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, tokenizer = tiny_clip.new_model(FRAME_SIZE)
    preprocess = clip_reward.FramePreprocessor(model)  # the reward model's own preprocessing

    start = time.time()
    theta = random_angles(rng, args.num_frames)
    images = preprocess(render_angles(theta, rng))
    test_theta = random_angles(np.random.default_rng(args.seed + 1), 1000)
    test_images = preprocess(render_angles(test_theta, np.random.default_rng(args.seed + 1)))
    print(
        f"rendered {len(images)} + {len(test_images)} frames in {time.time() - start:.0f}s; "
        f"angle classes {np.bincount(angle_label(theta), minlength=len(ANGLE_CAPTIONS))}"
    )

    captions = [caption for caption, _ in ANGLE_CAPTIONS]
    tiny_clip.train(model, tokenizer, images, [(captions, caption_targets(theta, args))], BASELINE_CAPTION, args.steps,
                    args.batch_size, args.learning_rate, start)  # fmt: skip
    test_groups = [(captions, torch.as_tensor(angle_label(test_theta)))]
    accuracy = tiny_clip.held_out_accuracy(model, tokenizer, test_images, test_groups, BASELINE_CAPTION)
    print(f"held-out angle caption accuracy: {accuracy:.3f}")

    # Each goal's reward around the circle, at the generic script's default alpha (0) and at 0.5.
    angles = np.linspace(0, np.pi, 9)
    frames = render_angles(angles, np.random.default_rng(0))
    for prompt in (UPRIGHT.prompt, DOWN.prompt):
        for alpha in (0.0, 0.5):
            rewards = clip_reward.CLIPReward(model, tokenizer, [prompt], [BASELINE_CAPTION], alpha=alpha)(frames).numpy()
            line = " ".join(f"{angle:.2f}:{reward:.3f}" for angle, reward in zip(angles, rewards))
            print(f"{prompt!r}, alpha {alpha}, reward by angle from upright: {line}")
    tiny_clip.save(model, args.output_dir, "tiny Pendulum CLIP for tests and demos only")
