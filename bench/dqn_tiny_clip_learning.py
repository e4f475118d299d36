"""Benchmark: does CLIP-rewarded DQN learn CartPole over seeds, end to end and offline?

Trains dqn_clip_cartpole.py with the project's tiny CartPole CLIP (a test asset, see assets/make_tiny_cartpole_clip.py)
as the only reward, once per seed (side by side, one torch thread each), and prints each seed's learning curve per block
of episodes: the success rate (the pole up on at least half of the steps), the ground-truth return (steps with the pole
up, out of the episode length) and the CLIP return. Writes one CSV per seed to --output-dir and draws
cartpole_learning_curve.png (mean over seeds, band from the lowest to the highest seed) from every CSV there. Last line:
`final success rate M ± S over N seeds (each a b c; random Y)`, of each seed's final block of episodes. The test suite
runs a shorter version.

    python bench/dqn_tiny_clip_learning.py   # ~10 min for 3 seeds on 2 cores
"""

import glob
import os
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
from bench.learning_curves import check_seeds, plot_curves, run_seeds, save_curve, summary_line, train_in  # noqa: E402


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
    seeds: tuple[int, ...] = (1, 2, 3)
    """training seeds, one run each"""
    parallel: int = 3
    """runs side by side (each with one torch thread when more than one)"""
    block: int = 8
    """episodes per row of the printed learning curve; the final success rate is the last block's"""
    label: str = "tiny CartPole CLIP, upright prompt"
    """the configuration's name in the plot and its CSVs (one per seed)"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "cartpole")
    """where the curves (<label>-seed-<seed>.csv) and cartpole_learning_curve.png, drawn from every curve there, go"""


def random_policy(episode_length, episodes=50, seed=0):
    """(mean ground-truth return, success rate) of uniformly random episodes."""
    env = clip_envs.make_cartpole("CartPole-v1", episode_length, render=False)
    env.action_space.seed(seed)
    returns = []  # CartPole's reward here is 1 per step with the pole up
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.mean(np.array(returns) >= episode_length / 2))


def train(args, seed):
    """One seed's run: (minutes, {tag: per-episode values}, steps)."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.join(REPO_ROOT, "dqn_clip_cartpole.py"), "--clip-model", args.clip_model,
                   "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs),
                   "--episode-length", str(args.episode_length), "--seed", str(seed), "--checkpoint-frequency", "0"]  # fmt: skip
        start = time.time()
        train_in(workdir, command, min(args.parallel, len(args.seeds)))
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = ("charts/success", "charts/episodic_return", "charts/episodic_clip_return")
        curve = {tag: [e.value for e in events.Scalars(tag)] for tag in tags}
        return minutes, curve, [e.step for e in events.Scalars("charts/success")]


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_seeds(args.seeds, args.parallel)
    runs = run_seeds(lambda seed: train(args, seed), args.seeds, args.parallel)
    random_return, random_success = random_policy(args.episode_length)
    print(
        f"dqn_clip_cartpole.py, reward {args.clip_model.replace(REPO_ROOT + os.sep, '')}, {args.total_timesteps} steps per seed"
    )
    print(f"random policy: ground-truth return {random_return:.1f} / {args.episode_length}, success {random_success:.2f}")
    finals = []
    for seed, (minutes, curve, steps) in zip(args.seeds, runs):
        print(f"seed {seed}: {minutes:.1f} min ({min(args.parallel, len(args.seeds))} runs side by side)")
        print(f"{'up to step':>10} {'success':>8} {'ground truth':>13} {'clip return':>12}")
        for i in range(0, len(steps), args.block):
            success, ground_truth, clip = [np.mean(curve[tag][i : i + args.block]) for tag in curve]
            print(f"{steps[min(i + args.block, len(steps)) - 1]:>10} {success:>8.2f} {ground_truth:>13.1f} {clip:>12.2f}")
        finals.append(np.mean(curve["charts/success"][-args.block :]))
        columns = {"success": curve["charts/success"], "ground_truth_return": curve["charts/episodic_return"]}
        save_curve(
            args.output_dir,
            args.label,
            seed,
            steps,
            columns,
            {"success": random_success, "ground_truth_return": random_return},
        )
    panels = [("success", "success (the pole up on >= half the steps)", (-0.02, 1.02)),
              ("ground_truth_return", f"steps with the pole up, of {args.episode_length}", (0, args.episode_length + 2))]  # fmt: skip
    plot_curves(args.output_dir, "cartpole_learning_curve.png", panels, args.block, "dqn_clip_cartpole.py, tiny CartPole CLIP")
    print(summary_line("success rate", finals, random_success))
