"""Benchmark: the Humanoid's render, the paper's against cheaper ones: speed, and how alike CLIP's pictures are.

The paper renders 480x480 with MuJoCo's default quality (4096² shadow map, 4× multisampling) and the reward model
resizes the frame to CLIP's input (224 for ViT-bigG-14). Each cheaper render (smaller frame, smaller shadow map, no
multisampling) draws the same states of a random-policy rollout; its frame goes through the same resize
(`clip_reward.resize_frames`) and is compared with the paper's picture. Also times gymnasium's stock scene at 480.
`bench/sps.py --humanoid-render SIZE SHADOW MULTISAMPLES` measures what a render does to a whole training run.

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

# name: (render size, (shadow map size, multisamples) or None for MuJoCo's defaults, the paper's)
RENDERS = {
    "the paper's: 480 px, 4096² shadow map, 4x multisampling": (480, None),
    "480 px, 1024² shadow map, no multisampling": (480, (1024, 0)),
    "224 px, 4096² shadow map, 4x multisampling": (224, None),
    "224 px, 512² shadow map, no multisampling": (224, (512, 0)),
}


@dataclass
class Args:
    frames: int = 100
    """states rendered per render (one random-policy step between states)"""
    clip_size: int = 224
    """CLIP's input size (224 for ViT-B-32, ViT-L-14, ViT-H-14 and ViT-bigG-14)"""
    threads: int = 1
    """llvmpipe's render threads (LP_NUM_THREADS), as in one env worker of many; 0 renders in the calling thread"""


def render_seconds(env, frames):
    env.render()  # warm-up: context creation, texture upload
    start = time.perf_counter()
    for _ in range(frames):
        env.render()
    return (time.perf_counter() - start) / frames


if __name__ == "__main__":
    args = tyro.cli(Args)
    os.environ["LP_NUM_THREADS"] = str(args.threads)  # read when the first GL context is made
    torch.set_num_threads(1)
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    envs = {
        name: clip_envs.make_humanoid("Humanoid-v5", 1000, textures, size, quality=quality)
        for name, (size, quality) in RENDERS.items()
    }
    stock = clip_envs.make_humanoid("Humanoid-v5", 1000, None, render_size=480)
    paper, *cheaper = envs
    size = (args.clip_size, args.clip_size)

    rng = np.random.default_rng(0)
    envs[paper].reset(seed=0)
    pictures = {name: [] for name in envs}
    for _ in range(args.frames):
        envs[paper].step(rng.uniform(-0.4, 0.4, 17))
        for name, env in envs.items():
            if name != paper:
                env.unwrapped.set_state(envs[paper].unwrapped.data.qpos.copy(), envs[paper].unwrapped.data.qvel.copy())
            pictures[name].append(resize_frames(env.render()[None], size)[0])

    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')} LP_NUM_THREADS={os.environ['LP_NUM_THREADS']} frames={args.frames}")
    print(f"{'render':<58} {'ms/frame':>8}   CLIP's picture ({args.clip_size} px) vs the paper's, 0-255 per channel")
    for name, env in [*envs.items(), ("gymnasium's stock scene at 480 px", stock)]:
        line = f"{name:<58} {render_seconds(env, args.frames) * 1000:8.1f}"
        if name in cheaper:
            difference = (torch.stack(pictures[name]) - torch.stack(pictures[paper])).abs().flatten() * 255
            line += (
                f"   mean {difference.mean():.2f}, 99th percentile {difference.quantile(0.99):.1f}, "
                f"above 8: {(difference > 8).float().mean() * 100:.1f}%"
            )
        print(line, flush=True)
