"""Benchmark: frames/s of sac_clip_humanoid.py's default scene vs gymnasium's stock Humanoid scene.

Both render the same states at the same resolution (CLIP's input size, default 224). Rendering
is the CPU bottleneck of CLIP-rewarded Humanoid training, so the default scene leaves out what
does not help CLIP (shadows, floor reflections) and renders straight at the target size.

    MUJOCO_GL=egl python bench/humanoid_render.py --size 224 --frames 100
"""

import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")
import gymnasium as gym  # noqa: E402
import tyro  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sac_clip_humanoid import make_env  # noqa: E402


@dataclass
class Args:
    size: int = 224
    """frame width and height in pixels"""
    frames: int = 100
    """frames rendered per scene (one step between frames)"""


def frames_per_second(env, frames):
    env.reset(seed=0)
    env.action_space.seed(0)
    env.render()  # warm-up: context creation, texture upload
    seconds = 0.0
    for _ in range(frames):
        env.step(env.action_space.sample())
        start = time.perf_counter()
        env.render()
        seconds += time.perf_counter() - start
    env.close()
    return frames / seconds


if __name__ == "__main__":
    args = tyro.cli(Args)
    default_scene = make_env("Humanoid-v5", 0, 1, False, "bench", 1000, True, args.size, (3.0, -10.0, 90.0, 0.8))()
    stock_scene = gym.make("Humanoid-v5", render_mode="rgb_array", width=args.size, height=args.size, terminate_when_unhealthy=False)
    default_fps = frames_per_second(default_scene, args.frames)
    stock_fps = frames_per_second(stock_scene, args.frames)
    print(f"MUJOCO_GL={os.environ['MUJOCO_GL']} size={args.size}x{args.size} frames={args.frames}")
    print(f"default scene (textured, no shadows/reflections): {default_fps:7.1f} frames/s")
    print(f"gymnasium's stock scene:                          {stock_fps:7.1f} frames/s")
    print(f"ratio default/stock: {default_fps / stock_fps:.2f}")
