"""Benchmark: does CLIP-rewarded SAC learn MountainCar, end to end and offline?

Trains sac_clip_mountaincar.py on the default textured scene with the project's tiny MountainCar
CLIP (a test asset, see assets/make_tiny_mountaincar_clip.py) as the only reward, and prints the
learning curve: the share of episodes that end parked at the flag, the ground-truth return and the
CLIP return per block of episodes. Last line: the success rate of the final block of episodes
next to a uniformly random policy's (measured numbers: docs/sac_clip_mountaincar.md), and draws the curves of every
run so far into docs/results/mountaincar/.

    python bench/sac_tiny_clip_learning.py --total-timesteps 64000
    python bench/sac_tiny_clip_learning.py --prompt "a car at the bottom of the valley"   # the opposite goal
"""

import glob
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import clip_envs  # noqa: E402
from bench.learning_curves import plot_curves, save_curve  # noqa: E402

# Hyper-parameters that learn in minutes on a CPU with the tiny CLIP's shaped reward; the paper's
# defaults (3M steps, gamma 0.9999, learning starts 75k) are for real CLIP and a GPU.
FAST_SAC = {"--learning-starts": 2000, "--train-frequency": 1, "--gradient-steps": 2, "--gamma": 0.99,
            "--policy-lr": 3e-3, "--q-lr": 3e-3, "--ent-coef": 0.01}  # fmt: skip


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-mountaincar-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    prompt: str = clip_envs.PROMPTS["mountaincar"][0]
    """the goal prompt"""
    total_timesteps: int = 64000
    """training steps"""
    num_envs: int = 8
    """parallel envs (CLIP scores their frames in one call)"""
    episode_length: int = 200
    """fixed episode length"""
    seed: int = 1
    """training seed"""
    block: int = 20
    """episodes per row of the printed learning curve"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "mountaincar")
    """where the curve (one CSV per prompt and seed) and mountaincar_learning_curves.png, drawn from every curve there, go"""


def random_policy_success_rate(episode_length, episodes=100, seed=0):
    """Share of uniformly random episodes that end parked at the flag."""
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", episode_length, textures=None)
    env.action_space.seed(seed)
    successes = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
        successes.append(obs[0] >= clip_envs.GOAL_POSITION)
    return float(np.mean(successes))


if __name__ == "__main__":
    args = tyro.cli(Args)
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.join(REPO_ROOT, "sac_clip_mountaincar.py"), "--clip-model", args.clip_model,
                   "--prompt", args.prompt, "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs),
                   "--episode-length", str(args.episode_length), "--seed", str(args.seed),
                   *[str(item) for flag_value in FAST_SAC.items() for item in flag_value]]  # fmt: skip
        start = time.time()
        subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        steps = [e.step for e in events.Scalars("charts/success")]
        success = [e.value for e in events.Scalars("charts/success")]
        ground_truth = [e.value for e in events.Scalars("charts/episodic_return")]
        clip = [e.value for e in events.Scalars("charts/episodic_clip_return")]
    random_rate = random_policy_success_rate(args.episode_length)
    print(f"sac_clip_mountaincar.py, reward {args.clip_model}, prompt {args.prompt!r}")
    print(f"{args.total_timesteps} steps in {minutes:.1f} min; {' '.join(f'{k} {v}' for k, v in FAST_SAC.items())}")
    print(f"{'up to step':>10} {'success':>8} {'ground truth':>13} {'clip return':>12}")
    for i in range(0, len(steps), args.block):
        block = slice(i, i + args.block)
        print(
            f"{steps[min(i + args.block, len(steps)) - 1]:>10} {np.mean(success[block]):>8.2f} "
            f"{np.mean(ground_truth[block]):>13.1f} {np.mean(clip[block]):>12.2f}"
        )
    label = f"{args.prompt!r}, seed {args.seed}"
    save_curve(args.output_dir, label, steps, {"success": success, "episodic_return": ground_truth}, {"success": random_rate})
    panels = [("success", "success (at the flag on >= half the steps)", (-0.02, 1.02)),
              ("episodic_return", "MountainCar's own return", None)]  # fmt: skip
    title = "sac_clip_mountaincar.py, tiny MountainCar CLIP"
    plot_curves(args.output_dir, "mountaincar_learning_curves.png", panels, args.block, title)
    print(f"final success rate {np.mean(success[-args.block:]):.2f} (random {random_rate:.2f})")
