"""Train the tiny MountainCar CLIP: a TEST AND DEMO ASSET, never a model to train real agents with.

Renders the default (textured) MountainCar scene at random car positions, captions each frame by
where the car is on the track ("a car at the bottom of the valley", ..., the paper's goal prompt
at the flag), and trains a tiny open_clip CLIP on them on the CPU (see tiny_clip.py).

A frame's caption target is its own caption, mixed with captions of stretches of track at a
similar height. So the embedding orders frames by height, and the goal prompt's reward rises as
the car climbs either hill and peaks at the flag: a shaped reward that SAC learns from within a
test's budget (a reward that is high only at the flag needs the paper's millions of steps of
exploration). The opposite prompt, "a car at the bottom of the valley", rewards staying low.

    python sac_clip_mountaincar.py --clip-model local-dir:assets/tiny-mountaincar-clip-for-tests

Seeded; ~10 minutes on 2 CPU cores. It will not replace the committed model unless told to:

    python assets/make_tiny_mountaincar_clip.py --overwrite
"""

import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402
import tiny_clip  # noqa: E402

# Captions by stretch of track, with the right end of each stretch; the last is the paper's goal prompt.
POSITION_CAPTIONS = [
    ("a car at the top of the left hill", -0.95),
    ("a car on the left slope", -0.7),
    ("a car at the bottom of the valley", -0.3),
    ("a car on the right slope", 0.1),
    ("a car high on the right slope, below the flag", clip_envs.GOAL_POSITION),
    (clip_envs.PROMPTS["mountaincar"][0], np.inf),
]
BASELINE_CAPTION = clip_envs.PROMPTS["mountaincar"][1]
MIN_POSITION, MAX_POSITION = -1.2, 0.6  # gymnasium's track


@dataclass
class Args:
    output_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-mountaincar-clip-for-tests")
    """where to write open_clip_config.json and the weights"""
    overwrite: bool = False
    """replace a model already in --output-dir (the committed test asset by default)"""
    seed: int = 0
    """seed for states, initialisation and batches"""
    num_frames: int = 4000
    """training frames rendered at random car positions"""
    steps: int = 800
    """optimiser steps"""
    batch_size: int = 128
    """frames per step"""
    learning_rate: float = 5e-4
    """peak AdamW learning rate (linear warm-up, cosine decay)"""
    height_weight: float = 0.7
    """share of a frame's caption target given to captions of stretches at a similar height"""
    height_scale: float = 0.2
    """how fast a caption's share falls with the height difference (exp(-difference / scale), track height 0..1)"""


def position_label(x):
    """Index into POSITION_CAPTIONS."""
    ends = np.array([end for _, end in POSITION_CAPTIONS])
    return np.searchsorted(ends, x, side="right")


def caption_targets(x, args):
    """Class probabilities (N, C): the frame's own caption, mixed with captions at a similar height."""
    ends = np.array([end for _, end in POSITION_CAPTIONS[:-1]])
    middles = (np.concatenate([[MIN_POSITION], ends]) + np.concatenate([ends, [MAX_POSITION]])) / 2
    height_gap = np.abs(clip_envs.mountain_height(x)[:, None] - clip_envs.mountain_height(middles)[None, :])
    similar = np.exp(-height_gap / args.height_scale)  # the log-probabilities CLIP's logits learn fall linearly with height
    similar /= similar.sum(axis=1, keepdims=True)
    own = np.eye(len(POSITION_CAPTIONS))[position_label(x)]
    return torch.as_tensor((1 - args.height_weight) * own + args.height_weight * similar, dtype=torch.float32)


def random_positions(rng, n):
    """Uniform on the track, plus a quarter near the flag so that the goal caption has enough frames."""
    x = rng.uniform(MIN_POSITION, MAX_POSITION, n)
    near_flag = rng.random(n) < 0.25
    x[near_flag] = rng.uniform(0.3, MAX_POSITION, near_flag.sum())
    return x


def render_positions(x, preprocess, chunk=256):
    """Preprocessed images of the default textured scene with the car at each x (the frame does not depend on velocity)."""
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    env.reset(seed=0)
    images = []
    for start in range(0, len(x), chunk):
        frames = []
        for xi in x[start : start + chunk]:
            env.unwrapped.state = np.array([xi, 0.0])
            frames.append(env.render())
        images.append(preprocess(np.stack(frames)))
    env.close()
    return torch.cat(images)


if __name__ == "__main__":
    args = tyro.cli(Args)
    tiny_clip.check_output_dir(args.output_dir, args.overwrite)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, tokenizer = tiny_clip.new_model()
    preprocess = clip_reward.FramePreprocessor(model)  # the reward model's own preprocessing

    start = time.time()
    x = random_positions(rng, args.num_frames)
    images = render_positions(x, preprocess)
    test_x = random_positions(np.random.default_rng(args.seed + 1), 1000)
    test_images = render_positions(test_x, preprocess)
    print(
        f"rendered {len(images)} + {len(test_images)} frames in {time.time() - start:.0f}s; "
        f"position classes {np.bincount(position_label(x), minlength=len(POSITION_CAPTIONS))}"
    )

    captions = [caption for caption, _ in POSITION_CAPTIONS]
    tiny_clip.train(model, tokenizer, images, [(captions, caption_targets(x, args))], BASELINE_CAPTION, args.steps,
                    args.batch_size, args.learning_rate, start)  # fmt: skip
    test_groups = [(captions, torch.as_tensor(position_label(test_x)))]
    accuracy = tiny_clip.held_out_accuracy(model, tokenizer, test_images, test_groups, BASELINE_CAPTION)
    print(f"held-out position caption accuracy: {accuracy:.3f}")

    # The reward landscape along the track, as sac_clip_mountaincar.py computes it by default (alpha 0.5).
    reward_model = clip_reward.CLIPReward(model, tokenizer, [captions[-1]], [BASELINE_CAPTION], alpha=0.5)
    track = np.linspace(MIN_POSITION, MAX_POSITION, 13)
    frames = render_positions(track, preprocess=torch.as_tensor).numpy()  # raw uint8 frames: the reward model preprocesses
    rewards = reward_model(frames).numpy()
    print("goal reward along the track: " + " ".join(f"{xi:+.2f}:{r:.3f}" for xi, r in zip(track, rewards)))
    tiny_clip.save(model, args.output_dir, "tiny MountainCar CLIP for tests and demos only")
