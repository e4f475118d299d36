"""Benchmark: does CLIP-rewarded DQN learn CartPole, end to end and offline?

Trains dqn_clip_cartpole.py with the project's tiny CartPole CLIP (a test asset, see
assets/make_tiny_cartpole_clip.py) as the only reward, and prints the learning curve: the
ground-truth return (steps with the pole up, out of the episode length) per block of episodes,
next to a uniformly random policy's, and draws it into docs/results/cartpole/. The test suite runs a shorter version.

    python bench/dqn_tiny_clip_learning.py --total-timesteps 30000
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


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-cartpole-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    total_timesteps: int = 30000
    """training steps"""
    num_envs: int = 4
    """parallel envs (CLIP scores their frames in one call)"""
    episode_length: int = 200
    """fixed episode length"""
    seed: int = 1
    """training seed"""
    block: int = 8
    """episodes per row of the printed learning curve"""
    label: str = "tiny CartPole CLIP, upright prompt"
    """the run's name in the plot and its CSV"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "cartpole")
    """where the curve (<label>.csv) and cartpole_learning_curve.png, drawn from every curve there, go"""


def random_policy_return(episode_length, episodes=50, seed=0):
    env = clip_envs.make_cartpole("CartPole-v1", episode_length, render=False)
    env.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


if __name__ == "__main__":
    args = tyro.cli(Args)
    with tempfile.TemporaryDirectory() as workdir:
        command = [
            sys.executable,
            os.path.join(REPO_ROOT, "dqn_clip_cartpole.py"),
            "--clip-model",
            args.clip_model,
            "--total-timesteps",
            str(args.total_timesteps),
            "--num-envs",
            str(args.num_envs),
            "--episode-length",
            str(args.episode_length),
            "--seed",
            str(args.seed),
        ]
        start = time.time()
        subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        steps = [e.step for e in events.Scalars("charts/episodic_return")]
        ground_truth = [e.value for e in events.Scalars("charts/episodic_return")]
        clip = [e.value for e in events.Scalars("charts/episodic_clip_return")]
    random_return = random_policy_return(args.episode_length)
    print(f"dqn_clip_cartpole.py, reward {args.clip_model}, {args.total_timesteps} steps in {minutes:.1f} min")
    print(f"random policy: ground-truth return {random_return:.1f} / {args.episode_length}")
    print(f"{'up to step':>10} {'ground truth':>13} {'clip return':>12}")
    for i in range(0, len(steps), args.block):
        print(
            f"{steps[min(i + args.block, len(steps)) - 1]:>10} {np.mean(ground_truth[i:i + args.block]):>13.1f} "
            f"{np.mean(clip[i:i + args.block]):>12.2f}"
        )
    save_curve(
        args.output_dir, args.label, steps, {"ground_truth_return": ground_truth}, {"ground_truth_return": random_return}
    )
    panels = [("ground_truth_return", f"steps with the pole up, of {args.episode_length}", (0, args.episode_length + 2))]
    plot_curves(args.output_dir, "cartpole_learning_curve.png", panels, args.block, "dqn_clip_cartpole.py, tiny CartPole CLIP")
    final = np.mean(ground_truth[-args.block :])
    print(f"final ground-truth return {final:.1f} = {final / random_return:.1f} x random")
