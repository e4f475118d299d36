"""Benchmark: does the generic script learn a new env from one sentence, over seeds, end to end and offline?

Trains sac_clip_continuous_action.py --task pendulum-upright on gymnasium's Pendulum-v1 (its own drawing, resized to
64 px in the env workers) with the project's tiny Pendulum CLIP (a test asset, assets/make_tiny_pendulum_clip.py) as the
only reward, once per seed (side by side, one torch thread each), and prints each seed's learning curve: per block of
episodes the success rate (within 0.3 rad of upright on at least half of the episode's steps, the paper's rule), the
upright fraction, Pendulum's own return (never learned from) and the CLIP return. Writes one CSV per seed to
--output-dir and draws pendulum_learning_curves.png (mean over seeds, band from the lowest to the highest seed) from
every CSV there. With --sb3, Stable-Baselines3's SAC also learns from the same CLIP through clip_reward_vec_env's adapter,
for the first seed, and its success is printed. Last line: `final success rate M ± S over N seeds (each a b c; random Y)`,
of each seed's final block of episodes.

    python bench/sac_tiny_clip_pendulum.py                                             # ~15 min for 3 seeds on 2 cores
    python bench/sac_tiny_clip_pendulum.py --prompt "a pendulum hanging straight down"  # the opposite goal
    python bench/sac_tiny_clip_pendulum.py --sb3 --seeds 1                              # SB3's SAC through the adapter
"""

import glob
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import clip_envs  # noqa: E402
from bench.learning_curves import blocks, check_seeds, plot_curves, run_seeds, save_curve, summary_line, train_in  # noqa: E402

TASK = clip_envs.ENV_TASKS["pendulum-upright"]
# CleanRL's SAC with one update per env step (4 per vector step of 4 envs) and learning from step 2000.
FAST_SAC = {"--learning-starts": 2000, "--gradient-steps": 4}


@dataclass
class Args:
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-pendulum-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    prompt: Optional[str] = None
    """the goal prompt (default: the task's, "a pendulum pointing straight up"); success is always upright"""
    alpha: float = 0.0
    """goal-baseline regularisation (the generic script's default, 0)"""
    total_timesteps: int = 24000
    """training steps per seed (120 episodes of 200 steps)"""
    num_envs: int = 4
    """parallel envs (CLIP scores their frames in one call)"""
    render_size: int = 64
    """frame size CLIP sees (the tiny CLIP's input)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """training seeds, one run each"""
    parallel: int = 3
    """runs side by side (each with one torch thread when more than one)"""
    block: int = 20
    """episodes per row of the printed learning curve; the final success rate is the last block's"""
    sb3: bool = False
    """also train Stable-Baselines3's SAC through the adapter (clip_reward_vec_env.py) for the first seed"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "pendulum")
    """where the curves (one CSV per prompt and seed) and pendulum_learning_curves.png, drawn from every curve there, go"""


def random_policy_success_rate(episodes=100, seed=0):
    """Share of uniformly random Pendulum-v1 episodes upright on at least half of their steps."""
    env = gym_make()
    env.action_space.seed(seed)
    successes = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        upright, done = [], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            upright.append(bool(TASK.holds(obs)))
            done = terminated or truncated
        successes.append(np.mean(upright) >= 0.5)
    return float(np.mean(successes))


def gym_make(render=False):
    import gymnasium as gym

    return gym.make(TASK.env_id, render_mode="rgb_array" if render else None)


def train(args, seed):
    """One seed's run: (minutes, {tag: per-episode values}, steps)."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.join(REPO_ROOT, "sac_clip_continuous_action.py"), "--task", "pendulum-upright",
                   "--clip-model", args.clip_model, "--alpha", str(args.alpha), "--render-size", str(args.render_size),
                   "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs), "--seed", str(seed),
                   "--checkpoint-frequency", "0", *(["--prompt", args.prompt] if args.prompt else []),
                   *[str(item) for flag_value in FAST_SAC.items() for item in flag_value]]  # fmt: skip
        start = time.time()
        train_in(workdir, command, min(args.parallel, len(args.seeds)))
        minutes = (time.time() - start) / 60
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = ("charts/success", "charts/task_fraction", "charts/episodic_return", "charts/episodic_clip_return")
        curve = {tag: [e.value for e in events.Scalars(tag)] for tag in tags}
        return minutes, curve, [e.step for e in events.Scalars("charts/success")]


def train_sb3(args, seed, episodes=20):
    """Stable-Baselines3's SAC (its defaults, one update per env step, learning from step 2000) on the same env, frames and CLIP through the
    adapter, for --total-timesteps; then the success rate of its last `episodes` training episodes."""
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    import clip_reward
    from clip_reward_vec_env import CLIPRewardSB3VecEnv

    torch.set_num_threads(1)
    prompt = args.prompt or TASK.prompt
    reward_model = clip_reward.load_reward_model(args.clip_model, [prompt], [TASK.baseline_prompt], args.alpha, device="cpu")

    upright = []  # per finished episode: its upright fraction, from the observations SB3 saw

    class UprightFraction(Monitor):
        def reset(self, **kwargs):
            self.upright_steps = []
            return super().reset(**kwargs)

        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            self.upright_steps.append(bool(TASK.holds(obs)))
            if terminated or truncated:
                upright.append(float(np.mean(self.upright_steps)))
            return obs, reward, terminated, truncated, info

    def make(i):
        return lambda: clip_envs.FrameInInfo(UprightFraction(gym_make(render=True)), size=args.render_size)

    venv = CLIPRewardSB3VecEnv(DummyVecEnv([make(i) for i in range(args.num_envs)]), reward_model)
    venv.seed(seed)
    start = time.time()
    model = SAC("MlpPolicy", venv, learning_starts=FAST_SAC["--learning-starts"], gradient_steps=-1, seed=seed, device="cpu")
    model.learn(args.total_timesteps)
    successes = [fraction >= 0.5 for fraction in upright[-episodes:]]
    return (time.time() - start) / 60, float(np.mean(successes)), len(upright)


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_seeds(args.seeds, args.parallel)
    runs = run_seeds(lambda seed: train(args, seed), args.seeds, args.parallel)
    random_rate = random_policy_success_rate()
    prompt = args.prompt or TASK.prompt
    reward = args.clip_model.replace(REPO_ROOT + os.sep, "")
    print(f"sac_clip_continuous_action.py --task pendulum-upright, reward {reward}, prompt {prompt!r}, alpha {args.alpha}")
    print(f"{args.total_timesteps} steps per seed, {args.num_envs} envs at {args.render_size} px; "
          f"{' '.join(f'{k} {v}' for k, v in FAST_SAC.items())}")  # fmt: skip
    finals = []
    for seed, (minutes, curve, steps) in zip(args.seeds, runs):
        print(f"seed {seed}: {minutes:.1f} min ({min(args.parallel, len(args.seeds))} runs side by side)")
        print(f"{'up to step':>10} {'success':>8} {'upright':>8} {'pendulum return':>16} {'clip return':>12}")
        ends = [steps[min(i + args.block, len(steps)) - 1] for i in range(0, len(steps), args.block)]
        for end, success, upright, own, clip in zip(ends, *[blocks(curve[tag], args.block) for tag in curve]):
            print(f"{end:>10} {success:>8.2f} {upright:>8.2f} {own:>16.1f} {clip:>12.1f}")
        finals.append(blocks(curve["charts/success"], args.block)[-1])
        columns = {"success": curve["charts/success"], "upright_fraction": curve["charts/task_fraction"],
                   "episodic_return": curve["charts/episodic_return"]}  # fmt: skip
        save_curve(args.output_dir, repr(prompt), seed, steps, columns, {"success": random_rate})
    panels = [("success", "success (upright on >= half the steps)", (-0.02, 1.02)),
              ("upright_fraction", "steps within 0.3 rad of upright", (-0.02, 1.02)),
              ("episodic_return", "Pendulum's own return (not learned)", None)]  # fmt: skip
    title = "sac_clip_continuous_action.py --env-id Pendulum-v1, tiny Pendulum CLIP"
    plot_curves(args.output_dir, "pendulum_learning_curves.png", panels, args.block, title)
    if args.sb3:
        minutes, success, episodes = train_sb3(args, args.seeds[0])
        print(f"Stable-Baselines3 SAC through CLIPRewardSB3VecEnv, seed {args.seeds[0]}, {args.total_timesteps} steps "
              f"({episodes} episodes, {minutes:.1f} min): success rate of its last 20 episodes {success:.2f}")  # fmt: skip
    print(summary_line("success rate", finals, random_rate))
