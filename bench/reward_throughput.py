"""Benchmark: frames/s of the CLIP reward path vs bare `encode_image`, same model, same batch.

The reward path takes uint8 CartPole frames (400x600) and does everything: upload, resize,
normalise, encode, normalise, project. The bare path only runs `model.encode_image` on
tensors preprocessed beforehand. Goal: ratio >= 0.9 (the reward costs at most 10% over CLIP).

    python bench/reward_throughput.py                       # ViT-B-32, random weights
    python bench/reward_throughput.py --clip-model ViT-B-32/laion2b_s34b_b79k --batch-size 256

With no pretrained tag the architecture gets random weights: speed does not depend on them.
"""

import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import open_clip
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_reward  # noqa: E402


@dataclass
class Args:
    clip_model: str = "ViT-B-32"
    """open_clip ARCH (random weights), ARCH/PRETRAINED or local-dir:/path"""
    clip_checkpoint: Optional[str] = None
    """local weights file for --clip-model ARCH"""
    batch_size: int = 32
    """frames per reward call (and per encode_image call)"""
    repeats: int = 5
    """timed repetitions of each path; the median is reported"""
    cuda: bool = True
    """use the GPU if there is one"""


def cartpole_frames(n, seed=0):
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        env.unwrapped.state = rng.uniform([-2.4, 0, -np.pi, 0], [2.4, 0, np.pi, 0])
        frames.append(env.render())
    env.close()
    return np.stack(frames)


def seconds(function, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    args = tyro.cli(Args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if "/" in args.clip_model or ":" in args.clip_model or args.clip_checkpoint:
        model, tokenizer = clip_reward.load_clip(args.clip_model, checkpoint=args.clip_checkpoint, device=device)
    else:
        model, tokenizer = open_clip.create_model(args.clip_model, device=device).eval(), open_clip.get_tokenizer(
            args.clip_model
        )
    reward_model = clip_reward.CLIPReward(
        model,
        tokenizer,
        ["pole vertically upright on top of the cart"],
        ["pole and cart"],
        alpha=0.5,
        batch_size=args.batch_size,
    )
    frames = cartpole_frames(args.batch_size)
    images = reward_model.preprocess(frames)

    @torch.inference_mode()
    def bare_encoder():
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            model.encode_image(images)

    def reward_path():
        reward_model(frames).cpu()

    bare_encoder(), reward_path()  # warm-up
    bare, full = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine speed hits both alike
        bare.append(seconds(bare_encoder, device))
        full.append(seconds(reward_path, device))
    bare_fps = args.batch_size / statistics.median(bare)
    reward_fps = args.batch_size / statistics.median(full)
    print(f"model={args.clip_model} device={device} batch={args.batch_size} frames={frames.shape[1]}x{frames.shape[2]}")
    print(f"bare encode_image on preprocessed tensors: {bare_fps:8.1f} frames/s")
    print(f"reward model on uint8 frames:              {reward_fps:8.1f} frames/s")
    print(f"ratio reward/bare: {reward_fps / bare_fps:.3f} (goal >= 0.9)")
