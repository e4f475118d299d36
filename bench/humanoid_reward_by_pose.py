"""Benchmark: which poses does a CLIP reward rank highest? The mean reward of each group of the labelled humanoid states.

Renders assets/humanoid-states.npz (varied key poses of the eight tasks, random-policy states) in the default scene
and prints the reward model's mean per-step reward of each group, of the states meeting --task and of the rest. A
prompt SAC can learn from scores its task's states above the standing start ("standing pose") by a margin that is
large next to the spread within the groups; `evaluate.py` prints a policy's CLIP return, its per-step mean x 100.

    python bench/humanoid_reward_by_pose.py --render-quality 512 0    # the tiny humanoid CLIP
"""

import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-humanoid-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    task: str = "kneeling"
    """the task whose states are counted apart, and whose Table 3 prompt is the default goal"""
    prompt: Optional[str] = None
    """the goal prompt (default: the task's)"""
    alpha: float = 0.0
    """goal-baseline regularisation"""
    render_size: int = 128
    """frame size CLIP sees"""
    render_quality: Optional[tuple[int, int]] = None
    """shadow map size and multisamples (default: MuJoCo's, the paper's)"""


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.task not in clip_envs.HUMANOID_TASKS:
        sys.exit(f"error: --task must be one of {', '.join(clip_envs.HUMANOID_TASKS)}, got {args.task!r}")
    clip_envs.use_headless_mujoco_gl()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    prompt = args.prompt or clip_envs.HUMANOID_TASKS[args.task]
    try:
        reward_model = clip_reward.load_reward_model(
            args.clip_model, [prompt], [clip_envs.PROMPTS["humanoid"][1]], args.alpha, device="cpu"
        )
    except clip_reward.CLIPRewardError as error:
        sys.exit(f"error: {error}")
    saved = np.load(os.path.join(REPO_ROOT, "assets", "humanoid-states.npz"))
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    env = clip_envs.make_humanoid("Humanoid-v5", 100, textures, args.render_size, quality=args.render_quality)
    env.reset(seed=0)
    frames = []
    for qpos, qvel in zip(saved["qpos"], saved["qvel"]):
        env.unwrapped.set_state(qpos, qvel)
        frames.append(env.render())
    env.close()
    rewards = reward_model(np.stack(frames)).numpy()
    meets = saved["labels"][:, list(saved["tasks"]).index(args.task)].astype(bool)

    print(f"{args.clip_model}, prompt {prompt!r}, alpha {args.alpha}, {args.render_size} px; mean reward per state (std)")
    groups = [(f"meeting {args.task}", meets), (f"not meeting {args.task}", ~meets)]
    groups += [(origin, saved["origin"] == origin) for origin in np.unique(saved["origin"])]
    for name, chosen in groups:
        print(f"{name:>24} {chosen.sum():>4} states  {rewards[chosen].mean():.3f} ({rewards[chosen].std():.3f})")
