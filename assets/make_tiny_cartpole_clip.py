"""Train the tiny CartPole CLIP: a TEST AND DEMO ASSET, never a model to train real agents with.

Renders CartPole frames from random states, captions each frame from its state ("pole vertically
upright on top of the cart", "pole fallen to the left", "cart at the right edge", ...), and trains
a tiny open_clip CLIP on them on the CPU (see tiny_clip.py). The result loads like any open_clip
model:

    python dqn_clip_cartpole.py --clip-model local-dir:assets/tiny-cartpole-clip-for-tests

Seeded; ~25 minutes on 2 CPU cores. It will not replace the committed model unless told to:

    python assets/make_tiny_cartpole_clip.py --overwrite
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
import clip_reward  # noqa: E402
import tiny_clip  # noqa: E402

UPRIGHT_DEGREES = 6  # |angle| below this is "upright"
ANGLE_CAPTIONS = [
    "pole vertically upright on top of the cart",
    "pole tilted to the right",
    "pole tilted to the left",
    "pole fallen to the right",
    "pole fallen to the left",
    "pole hanging down below the cart",
]
POSITION_CAPTIONS = ["cart at the left edge", "cart in the middle", "cart at the right edge"]
BASELINE_CAPTION = "pole and cart"


@dataclass
class Args:
    output_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-cartpole-clip-for-tests")
    """where to write open_clip_config.json and the weights"""
    overwrite: bool = False
    """replace a model already in --output-dir (the committed test asset by default)"""
    seed: int = 0
    """seed for states, initialisation and batches"""
    num_frames: int = 8000
    """training frames rendered from random states"""
    steps: int = 2500
    """optimiser steps"""
    batch_size: int = 128
    """frames per step"""
    learning_rate: float = 5e-4
    """peak AdamW learning rate (linear warm-up, cosine decay)"""


def angle_label(theta):
    """Index into ANGLE_CAPTIONS; positive angles lean right in gymnasium's drawing."""
    degrees = np.degrees(np.abs(theta))
    right = theta > 0
    return np.select(
        [degrees < UPRIGHT_DEGREES, degrees < 45, degrees < 135],
        [0, np.where(right, 1, 2), np.where(right, 3, 4)],
        default=5,
    )


def position_label(x):
    return np.select([x < -1.2, x > 1.2], [0, 2], default=1)


def random_states(rng, n):
    """Cart positions uniform on the track; half the angles near upright, half uniform on the circle."""
    x = rng.uniform(-2.4, 2.4, n)
    theta = np.where(rng.random(n) < 0.5, rng.normal(0, np.radians(20), n), rng.uniform(-np.pi, np.pi, n))
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    return x, theta


def render_states(x, theta, preprocess, chunk=256):
    """Preprocessed images of CartPole states (gymnasium's own drawing, as in dqn_clip_cartpole.py)."""
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    images = []
    for start in range(0, len(x), chunk):
        frames = []
        for xi, ti in zip(x[start : start + chunk], theta[start : start + chunk]):
            env.unwrapped.state = np.array([xi, 0.0, ti, 0.0])
            frames.append(env.render())
        images.append(preprocess(np.stack(frames)))  # downsized at once: full frames would fill memory
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
    x, theta = random_states(rng, args.num_frames)
    images = render_states(x, theta, preprocess)
    test_x, test_theta = random_states(np.random.default_rng(args.seed + 1), 1000)
    test_images = render_states(test_x, test_theta, preprocess)
    angle_labels = torch.as_tensor(angle_label(theta))
    print(
        f"rendered {len(images)} + {len(test_images)} frames in {time.time() - start:.0f}s; "
        f"angle classes {np.bincount(angle_labels.numpy(), minlength=6)}"
    )

    caption_groups = [(ANGLE_CAPTIONS, angle_labels), (POSITION_CAPTIONS, torch.as_tensor(position_label(x)))]
    tiny_clip.train(
        model, tokenizer, images, caption_groups, BASELINE_CAPTION, args.steps, args.batch_size, args.learning_rate, start
    )
    test_groups = [
        (ANGLE_CAPTIONS, torch.as_tensor(angle_label(test_theta))),
        (POSITION_CAPTIONS, torch.as_tensor(position_label(test_x))),
    ]
    accuracy = tiny_clip.held_out_accuracy(model, tokenizer, test_images, test_groups, BASELINE_CAPTION)
    print(f"held-out angle caption accuracy: {accuracy:.3f}")
    tiny_clip.save(model, args.output_dir, "tiny CartPole CLIP for tests and demos only")
