"""Benchmark (issue 12's stretch): does CLIP-rewarded SAC learn to kneel from the tiny humanoid CLIP, offline?

Trains sac_clip_humanoid.py --task kneeling in the default scene, rendered at 64 px (the tiny CLIP's input), with the
project's tiny humanoid CLIP (a test asset, assets/make_tiny_humanoid_clip.py) as the only reward, and prints the
learning curve per block of episodes: the kneeling success rate (kneeling on at least half of the steps, the paper's
rule), the mean kneeling fraction, the torso height and the CLIP return. Last line: the final block's success rate next
to a uniformly random policy's. Measured numbers: README, Benchmark.

    python bench/sac_tiny_clip_kneeling.py --total-timesteps 80000     # ~45 min on 2 CPU cores
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

# The paper's humanoid SAC (gamma 0.95, learning rates 6e-4, 256 units, entropy autotuned), with what a CPU can afford:
# learning from step 4000 and one gradient step per 4 env steps (the paper: one per 32, over 10M steps).
FAST_SAC = {"--learning-starts": 4000, "--train-frequency": 1, "--gradient-steps": 2}


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-humanoid-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    total_timesteps: int = 80000
    """training steps"""
    num_envs: int = 8
    """parallel envs (CLIP scores their frames in one call)"""
    render_size: int = 64
    """frame size (the tiny CLIP's input)"""
    alpha: float = 0.0
    """goal-baseline regularisation (the paper's humanoid runs: 0)"""
    seed: int = 1
    """training seed"""
    block: int = 40
    """episodes per row of the printed learning curve"""


def random_policy_success_rate(episodes=40, seed=0):
    """Share of uniformly random 100-step episodes that kneel on at least half of their steps."""
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.action_space.seed(seed)
    successes = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        kneeling, done = [], False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            kneeling.append(clip_envs.task_success(env.unwrapped.data)["kneeling"])
            done = terminated or truncated
        successes.append(np.mean(kneeling) >= 0.5)
    env.close()
    return float(np.mean(successes))


if __name__ == "__main__":
    args = tyro.cli(Args)
    clip_envs.use_headless_mujoco_gl()
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.join(REPO_ROOT, "sac_clip_humanoid.py"), "--clip-model", args.clip_model,
                   "--task", "kneeling", "--alpha", str(args.alpha), "--total-timesteps", str(args.total_timesteps),
                   "--num-envs", str(args.num_envs), "--render-size", str(args.render_size), "--seed", str(args.seed),
                   "--checkpoint-frequency", "0",
                   *[str(item) for flag_value in FAST_SAC.items() for item in flag_value]]  # fmt: skip
        start = time.time()
        subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = ("charts/success", "pose/kneeling", "pose/torso_height", "charts/episodic_clip_return")
        curve = {tag: [e.value for e in events.Scalars(tag)] for tag in tags}
        steps = [e.step for e in events.Scalars("charts/success")]
    random_rate = random_policy_success_rate()
    print(f"sac_clip_humanoid.py --task kneeling, reward {args.clip_model}, alpha {args.alpha}, {args.render_size} px")
    print(f"{args.total_timesteps} steps in {minutes:.1f} min; {' '.join(f'{k} {v}' for k, v in FAST_SAC.items())}")
    print(f"{'up to step':>10} {'success':>8} {'kneeling':>9} {'torso height':>13} {'clip return':>12}")
    for i in range(0, len(steps), args.block):
        block = slice(i, i + args.block)
        print(
            f"{steps[min(i + args.block, len(steps)) - 1]:>10} {np.mean(curve['charts/success'][block]):>8.2f} "
            f"{np.mean(curve['pose/kneeling'][block]):>9.2f} {np.mean(curve['pose/torso_height'][block]):>13.2f} "
            f"{np.mean(curve['charts/episodic_clip_return'][block]):>12.2f}"
        )
    print(f"final success rate {np.mean(curve['charts/success'][-args.block:]):.2f} (random {random_rate:.2f})")
