"""The numbers every training script logs per episode, on episodes on both sides of each rule.

A spy on the vector env's step decides, per env and step, whether the task holds (the signal each script reads: CartPole's
upright reward and its episode sum, the car's position, the humanoid's pose indicator, the pendulum's angle), and a spy on
the reward model pays 0.001 * (step in the episode) for each frame after a step and 100 for the frame of the step that
resets a finished episode. Alternate episodes hold the task on 1/2 of their steps and on one step fewer, and every
episode ends and resets inside a vector step; on the reset step the task holds. So a script that counts the reset step,
misses the first or last step of an episode, or compares with > instead of >= logs a wrong task fraction, success,
CLIP return or checkpoint return here."""

import os
import runpy
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import clip_reward
from conftest import REPO_ROOT
from helpers import read_scalars

LENGTH = 10
RESET_REWARD = 100.0
SHORT = ["--num-envs", 2, "--buffer-size", 1000, "--batch-size", 16, "--image-frequency", 0]
RUNS = {  # (script, arguments, episode length, how the task's signal reaches the script)
    "dqn_clip_cartpole.py": (["--episode-length", LENGTH, "--total-timesteps", 4 * (LENGTH + 1) * 2, "--learning-starts", 40],
                             LENGTH, "cartpole"),
    "sac_clip_mountaincar.py": (["--episode-length", LENGTH, "--total-timesteps", 4 * (LENGTH + 1) * 2,
                                 "--learning-starts", 40], LENGTH, "position"),
    "sac_clip_humanoid.py": (["--episode-length", LENGTH, "--total-timesteps", 4 * (LENGTH + 1) * 2, "--learning-starts", 40,
                              "--render-size", 32, "--render-quality", 512, 0, "--task", "kneeling"], LENGTH, "kneeling"),
    "sac_clip_continuous_action.py": (["--task", "pendulum-upright", "--render-size", 32, "--total-timesteps", 2 * 201 * 2,
                                       "--learning-starts", 100], 200, "cosine"),
}  # fmt: skip


def holding_steps(episode, length):
    """Steps on which the task holds in this episode: 1/2 of them, or one fewer (a fraction just under 1/2)."""
    return length // 2 - (episode % 2 == 0)


@pytest.mark.parametrize("script", RUNS)
def test_per_episode_success_task_fraction_and_clip_return(script, tiny_clip_spec, tmp_path, monkeypatch):
    args, length, signal = RUNS[script]
    real_step, real_score = gym.vector.SyncVectorEnv.step, clip_reward.CLIPReward.score
    progress = {"t": None, "episode": None, "resetting": None}

    def step(self, actions):
        next_obs, rewards, terminations, truncations, infos = real_step(self, actions)
        if progress["t"] is None:
            progress.update(t=np.zeros(self.num_envs, int), episode=np.zeros(self.num_envs, int),
                            resetting=np.zeros(self.num_envs, bool))  # fmt: skip
        resetting = progress["resetting"].copy()
        progress["episode"] += resetting
        progress["t"] = np.where(resetting, 0, progress["t"] + 1)  # the reset step is step 0 of no episode
        holds = np.array([resetting[i] or progress["t"][i] <= holding_steps(progress["episode"][i], length)
                          for i in range(self.num_envs)])  # fmt: skip
        if signal == "cartpole":  # CartPoleOnTrack's reward is 1 while upright; its episode return is their sum
            rewards = np.where(resetting, 0.0, holds.astype(float))
            for i in np.flatnonzero(infos.get("_episode", np.zeros(self.num_envs, bool))):
                infos["episode"]["r"][i] = holding_steps(progress["episode"][i], length)
        elif signal == "position":
            next_obs[:, 0] = np.where(holds, 0.4501, 0.4499)  # the flag at x >= 0.45 (float32 observations)
        elif signal == "kneeling":
            infos["kneeling"] = holds.astype(float)
        else:
            next_obs[:, 0] = np.where(holds, np.cos(0.3) + 1e-4, np.cos(0.3) - 1e-4)  # within 0.3 rad of upright
        progress["resetting"] = terminations | truncations
        return next_obs, rewards, terminations, truncations, infos

    def score(self, frames):
        rewards, along, off = real_score(self, frames)
        paid = np.where(progress["resetting_now"], RESET_REWARD, 0.001 * progress["t"])
        return torch.as_tensor(paid, dtype=torch.float32), along, off

    def step_and_remember(self, actions):
        result = step(self, actions)
        progress["resetting_now"] = progress["t"] == 0
        return result

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", step_and_remember)
    monkeypatch.setattr(clip_reward.CLIPReward, "score", score)
    monkeypatch.chdir(tmp_path)
    total = args[args.index("--total-timesteps") + 1]
    argv = [script, "--no-cuda", "--no-async-envs", "--clip-model", tiny_clip_spec, *SHORT, *args,
            "--checkpoint-frequency", total]  # fmt: skip
    monkeypatch.setattr(sys, "argv", list(map(str, argv)))
    runpy.run_path(os.path.join(REPO_ROOT, script), run_name="__main__")

    scalars, _, run_dir = read_scalars(tmp_path)
    episodes = len(scalars["charts/success"])
    assert episodes >= 4 and scalars["charts/episodic_length"] == [length] * episodes
    expected_fraction = [holding_steps(e, length) / length for e in np.repeat(np.arange(episodes // 2), 2)]
    np.testing.assert_allclose(scalars["charts/task_fraction"], expected_fraction, rtol=1e-6)
    assert scalars["charts/success"] == [float(f >= 0.5) for f in expected_fraction]  # 0 just under 1/2, 1 at it
    assert set(scalars["charts/success"]) == {0.0, 1.0}
    clip_return = 0.001 * length * (length + 1) / 2  # the frames after each of the episode's steps, no reset frame
    np.testing.assert_allclose(scalars["charts/episodic_clip_return"], [clip_return] * episodes, rtol=1e-4)
    checkpoint = torch.load(f"{run_dir}/checkpoints/step_{total:09d}.pt", weights_only=False)
    assert checkpoint["training_return"] == pytest.approx(clip_return, rel=1e-4)  # what ranks the checkpoints
