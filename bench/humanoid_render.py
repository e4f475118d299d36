"""Benchmark: the Humanoid's render, the paper's 480 px path against rendering straight at CLIP's size.

The paper renders 480x480 and resizes the frame to CLIP's input (224 for ViT-bigG-14). Rendering
straight at 224 would be cheaper; this measures how much cheaper and whether CLIP gets the same
picture: both paths render the same states of a random-policy rollout, and the 480 frame goes
through the reward model's own resize (`clip_reward.resize_frames`). Also times gymnasium's stock scene at 480 for reference.

    MUJOCO_GL=egl python bench/humanoid_render.py --frames 100
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
from clip_reward import resize_frames  # noqa: E402


@dataclass
class Args:
    frames: int = 100
    """states rendered per path (one random-policy step between states)"""
    clip_size: int = 224
    """CLIP's input size (224 for ViT-B-32, ViT-L-14, ViT-H-14 and ViT-bigG-14)"""


def render_seconds(env, frames):
    env.render()  # warm-up: context creation, texture upload
    start = time.perf_counter()
    for _ in range(frames):
        env.render()
    return (time.perf_counter() - start) / frames


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    paper = clip_envs.make_humanoid("Humanoid-v5", 1000, textures, render_size=480)
    direct = clip_envs.make_humanoid("Humanoid-v5", 1000, textures, render_size=args.clip_size)
    stock = clip_envs.make_humanoid("Humanoid-v5", 1000, None, render_size=480)
    size = (args.clip_size, args.clip_size)

    rng = np.random.default_rng(0)
    paper.reset(seed=0)
    resized, straight = [], []
    for _ in range(args.frames):
        paper.step(rng.uniform(-0.4, 0.4, 17))
        direct.unwrapped.set_state(paper.unwrapped.data.qpos.copy(), paper.unwrapped.data.qvel.copy())
        resized.append(resize_frames(paper.render()[None], size)[0])
        straight.append(resize_frames(direct.render()[None], size)[0])
    difference = (torch.stack(resized) - torch.stack(straight)).abs().flatten() * 255

    timings = {
        name: render_seconds(env, args.frames) for name, env in [("paper", paper), ("direct", direct), ("stock", stock)]
    }
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')} frames={args.frames}")
    print(f"paper's scene at 480, resized to {args.clip_size}: {1 / timings['paper']:6.1f} frames/s")
    print(f"paper's scene straight at {args.clip_size}:        {1 / timings['direct']:6.1f} frames/s")
    print(f"gymnasium's stock scene at 480:          {1 / timings['stock']:6.1f} frames/s")
    print(
        f"picture CLIP gets, straight vs resized (0-255 per channel): mean {difference.mean():.2f}, "
        f"99th percentile {difference.quantile(0.99):.1f}, max {difference.max():.0f}"
    )
    print(f"ratio direct/paper frames/s: {timings['paper'] / timings['direct']:.2f}")
