"""Envs stepped and rendered in worker processes (gymnasium's AsyncVectorEnv, the default with --num-envs > 1) give
the frames, observations and rewards of in-process envs, and the training scripts the same runs."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import clip_envs
from conftest import REPO_ROOT
from helpers import read_scalars, run_script

MAKERS = {
    "cartpole": lambda: clip_envs.make_cartpole("CartPole-v1", 30, render=True),
    "mountaincar": lambda: clip_envs.make_mountaincar("MountainCarContinuous-v0", 30, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES)),
    "humanoid": lambda: clip_envs.make_humanoid("Humanoid-v5", 30, clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES), 64),
}


def thunk(env):
    return lambda: clip_envs.FrameInInfo(gym.wrappers.RecordEpisodeStatistics(MAKERS[env]()))


@pytest.mark.parametrize("env", MAKERS)
def test_async_envs_give_the_frames_and_rewards_of_in_process_envs(env):
    """Same seeds and actions, across an episode's end and its autoreset: identical observations, rewards and frames."""
    sync_envs = gym.vector.SyncVectorEnv([thunk(env) for _ in range(3)])
    # A forked worker hangs on MuJoCo's EGL context if this pytest process rendered the humanoid before (the scripts
    # never render in the parent): humanoid workers start afresh.
    async_envs = gym.vector.AsyncVectorEnv([thunk(env) for _ in range(3)], context="spawn" if env == "humanoid" else None)
    sync_envs.action_space.seed(0)
    outputs = [vector_env.reset(seed=5) for vector_env in (sync_envs, async_envs)]
    np.testing.assert_array_equal(outputs[0][1]["frame"], outputs[1][1]["frame"])
    for step in range(35):
        actions = sync_envs.action_space.sample()
        (obs, rewards, ends, cuts, info), (a_obs, a_rewards, a_ends, a_cuts, a_info) = (e.step(actions) for e in (sync_envs, async_envs))
        np.testing.assert_array_equal(obs, a_obs)
        np.testing.assert_array_equal(rewards, a_rewards)
        np.testing.assert_array_equal(ends | cuts, a_ends | a_cuts)
        assert info["frame"].shape[0] == 3 and info["frame"].dtype == np.uint8
        np.testing.assert_array_equal(info["frame"], a_info["frame"], err_msg=f"step {step}")
    assert not np.array_equal(info["frame"][0], outputs[0][1]["frame"][0])  # the frames changed, so equality means something
    sync_envs.close(), async_envs.close()


def test_a_script_with_async_envs_logs_what_it_logs_with_in_process_envs(tiny_clip_spec, tmp_path):
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 240, "--num-envs", 3, "--episode-length", 40,
            "--learning-starts", 90, "--batch-size", 16, "--train-frequency", 5, "--gradient-steps", 10, "--seed", 4]
    logged = []
    for kind in ("--async-envs", "--no-async-envs"):
        cwd = tmp_path / kind
        cwd.mkdir()
        result = run_script("sac_clip_mountaincar.py", [*args, kind], cwd)
        assert result.returncode == 0, result.stderr
        scalars, _, _ = read_scalars(cwd)
        logged.append({tag: values for tag, values in scalars.items() if tag != "charts/SPS"})
    assert "charts/episodic_clip_return" in logged[0] and "losses/qf1_loss" in logged[0]
    assert logged[0] == logged[1]


def test_a_failing_training_process_ends_instead_of_waiting_for_its_env_workers():
    """Env workers ignore SIGTERM (the training process checkpoints first), and SIGTERM is all that multiprocessing's
    exit handler sends them; clip_envs kills them at exit, so a script that fails ends (it used to hang for ever)."""
    code = ("import gymnasium as gym, clip_envs\n"
            "envs = gym.vector.AsyncVectorEnv([lambda: clip_envs.FrameInInfo(gym.make('CartPole-v1'), False)] * 2)\n"
            "envs.reset(seed=0)\n"
            "raise RuntimeError('the training process fails')\n")
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "RuntimeError: the training process fails" in result.stderr, result.stderr
