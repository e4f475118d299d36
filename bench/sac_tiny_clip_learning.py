"""Benchmark: does CLIP-rewarded SAC learn MountainCar, and keep it, over seeds, end to end and offline?

Trains sac_clip_mountaincar.py on the default textured scene with the project's tiny MountainCar CLIP (a test asset,
see assets/make_tiny_mountaincar_clip.py) as the only reward, once per seed (side by side, one torch thread each), and
prints each seed's learning curve: per block of episodes the success rate (parked at the flag on at least half of the
steps, the paper's rule), the share of episodes that end at the flag, the ground-truth return and the CLIP return.
Writes one CSV per seed to --output-dir and draws mountaincar_learning_curves.png (mean over seeds, band from the lowest
to the highest seed) from every CSV there. Last lines: each seed's lowest block in the last quarter of training, then
`final success rate M ± S over N seeds (each a b c; random Y)`, of each seed's final block of episodes.

    python bench/sac_tiny_clip_learning.py                                                # ~12 min for 3 seeds on 2 cores
    python bench/sac_tiny_clip_learning.py --prompt "a car at the bottom of the valley"   # the opposite goal
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
from bench.learning_curves import blocks, check_seeds, plot_curves, run_seeds, save_curve, summary_line, train_in  # noqa: E402

# Settings that reach the flag in minutes on a CPU with the tiny CLIP's shaped reward; the paper's (3M steps, gamma
# 0.9999, learning starts 75k, 400 updates every 200 steps) are for real CLIP and a GPU. Without --center-rewards none
# tried here keeps its success (every attempt: docs/sac_clip_mountaincar.md#results).
FAST_SAC = {"--learning-starts": 2000, "--train-frequency": 1, "--gradient-steps": 2, "--gamma": 0.999,
            "--policy-lr": 3e-3, "--q-lr": 3e-3, "--ent-coef": 0.01, "--center-rewards": True}  # fmt: skip


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-mountaincar-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    prompt: str = clip_envs.PROMPTS["mountaincar"][0]
    """the goal prompt"""
    total_timesteps: int = 96000
    """training steps per seed"""
    num_envs: int = 8
    """parallel envs (CLIP scores their frames in one call)"""
    episode_length: int = 200
    """fixed episode length"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """training seeds, one run each"""
    parallel: int = 3
    """runs side by side (each with one torch thread when more than one)"""
    block: int = 20
    """episodes per row of the printed learning curve; the final success rate is the last block's"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "mountaincar")
    """where the curves (one CSV per prompt and seed) and mountaincar_learning_curves.png, drawn from every curve there, go"""


def random_policy_success_rate(episode_length, episodes=100, seed=0):
    """Share of uniformly random episodes parked at the flag on at least half of their steps."""
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", episode_length, textures=None)
    env.action_space.seed(seed)
    successes = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        at_flag, done = [], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            at_flag.append(obs[0] >= clip_envs.GOAL_POSITION)
            done = terminated or truncated
        successes.append(np.mean(at_flag) >= 0.5)
    return float(np.mean(successes))


def train(args, seed):
    """One seed's run: (minutes, {tag: per-episode values}, steps)."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.join(REPO_ROOT, "sac_clip_mountaincar.py"), "--clip-model", args.clip_model,
                   "--prompt", args.prompt, "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs),
                   "--episode-length", str(args.episode_length), "--seed", str(seed), "--checkpoint-frequency", "0",
                   *[str(item) for flag, value in FAST_SAC.items() for item in ((flag,) if value is True else (flag, value))]]  # fmt: skip
        start = time.time()
        train_in(workdir, command, min(args.parallel, len(args.seeds)))
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = ("charts/success", "charts/ends_at_flag", "charts/episodic_return", "charts/episodic_clip_return")
        curve = {tag: [e.value for e in events.Scalars(tag)] for tag in tags}
        return minutes, curve, [e.step for e in events.Scalars("charts/success")]


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_seeds(args.seeds, args.parallel)
    runs = run_seeds(lambda seed: train(args, seed), args.seeds, args.parallel)
    random_rate = random_policy_success_rate(args.episode_length)
    print(f"sac_clip_mountaincar.py, reward {args.clip_model.replace(REPO_ROOT + os.sep, '')}, prompt {args.prompt!r}")
    print(f"{args.total_timesteps} steps per seed; {' '.join(k if v is True else f'{k} {v}' for k, v in FAST_SAC.items())}")
    finals, lowest_late = [], []
    for seed, (minutes, curve, steps) in zip(args.seeds, runs):
        print(f"seed {seed}: {minutes:.1f} min ({min(args.parallel, len(args.seeds))} runs side by side)")
        print(f"{'up to step':>10} {'success':>8} {'ends at flag':>13} {'ground truth':>13} {'clip return':>12}")
        ends = [steps[min(i + args.block, len(steps)) - 1] for i in range(0, len(steps), args.block)]
        rows = zip(ends, *[blocks(curve[tag], args.block) for tag in curve])
        for end, success, at_flag, ground_truth, clip in rows:
            print(f"{end:>10} {success:>8.2f} {at_flag:>13.2f} {ground_truth:>13.1f} {clip:>12.2f}")
        success_blocks = blocks(curve["charts/success"], args.block)
        finals.append(success_blocks[-1])
        lowest_late.append(min(s for end, s in zip(ends, success_blocks) if end > 0.75 * args.total_timesteps))
        columns = {"success": curve["charts/success"], "ends_at_flag": curve["charts/ends_at_flag"],
                   "episodic_return": curve["charts/episodic_return"]}  # fmt: skip
        save_curve(args.output_dir, repr(args.prompt), seed, steps, columns, {"success": random_rate})
    panels = [("success", "success (at the flag on >= half the steps)", (-0.02, 1.02)),
              ("ends_at_flag", "episodes that end at the flag", (-0.02, 1.02)),
              ("episodic_return", "MountainCar's own return", None)]  # fmt: skip
    title = "sac_clip_mountaincar.py, tiny MountainCar CLIP"
    plot_curves(args.output_dir, "mountaincar_learning_curves.png", panels, args.block, title)
    print(f"lowest success of a block in the last quarter, each seed: {' '.join(f'{value:.2f}' for value in lowest_late)}")
    print(summary_line("success rate", finals, random_rate))
