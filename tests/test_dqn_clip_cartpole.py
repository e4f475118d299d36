"""dqn_clip_cartpole.py end to end: CLIP-rewarded run with a tiny CLIP, errors, and a DQN that learns."""

import glob
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import clip_reward
import clip_envs
from dqn_clip_cartpole import QNetwork
from helpers import assert_finite, assert_one_line_error, read_scalars, run_script

SCRIPT = "dqn_clip_cartpole.py"
EPISODE_LENGTH = 100


def random_policy_rollouts(episodes, episode_length, seed=0, render=False):
    """Ground-truth returns (and rendered frames) of a uniformly random policy."""
    env = clip_envs.make_cartpole("CartPole-v1", episode_length, render)
    env.action_space.seed(seed)
    returns, frames = [], []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
            if render:
                frames.append(env.render())
        returns.append(total)
    env.close()
    return np.array(returns), np.array(frames)


@pytest.fixture(scope="module")
def clip_run(tiny_clip_spec, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dqn_clip")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 600, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 100, "--train-frequency", 1, "--capture-video", "--save-model", "--seed", 3]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_and_ground_truth_scalars(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    for tag in ["charts/episodic_clip_return", "charts/episodic_ground_truth_return", "charts/success_rate",
                "charts/episodic_length", "charts/SPS", "charts/epsilon", "losses/td_loss", "losses/q_values"]:
        assert_finite(scalars.get(tag))
    # 2 envs x 600 / 2 steps, each episode 100 steps plus the step that resets it.
    assert len(scalars["charts/episodic_clip_return"]) == 4
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 4
    ground_truth = np.array(scalars["charts/episodic_ground_truth_return"])
    np.testing.assert_allclose(scalars["charts/success_rate"], ground_truth / EPISODE_LENGTH, rtol=1e-6)
    assert np.all((ground_truth >= 0) & (ground_truth <= EPISODE_LENGTH))
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.0|" in hyperparameters and "|prompt|" in hyperparameters
    assert "SPS=" in result.stdout and "clip_return=" in result.stdout


def test_clip_return_is_the_sum_of_clip_rewards_of_the_episodes_frames(clip_run, tiny_clip_spec):
    """Each step's reward comes from the same reward model on a rendered frame, so an episode's
    CLIP return lies within EPISODE_LENGTH x [lowest, highest] reward of such frames."""
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    model = clip_reward.load_reward_model(tiny_clip_spec, ["pole vertically upright on top of the cart"], ["pole and cart"], 0.0, device="cpu")
    _, frames = random_policy_rollouts(3, EPISODE_LENGTH, render=True)
    rewards = model(frames).numpy()
    per_step = np.array(scalars["charts/episodic_clip_return"]) / EPISODE_LENGTH
    margin = 0.1 * (rewards.max() - rewards.min()) + 1e-4
    assert np.all(per_step >= rewards.min() - margin) and np.all(per_step <= rewards.max() + margin), (per_step, rewards.min(), rewards.max())


def test_clip_run_saves_video_and_model(clip_run):
    cwd, _ = clip_run
    assert glob.glob(os.path.join(cwd, "videos", "*", "*.mp4"))
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "dqn_clip_cartpole.cleanrl_model"))
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    q_network = QNetwork(envs)
    q_network.load_state_dict(torch.load(model_path))  # strict: every weight present with the right shape
    assert q_network(torch.zeros(1, 4)).shape == (1, 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "1.5"], "alpha must be in [0, 1]"),
        (["--clip-model", "ViT-B-33/laion2b_s34b_b79k"], "unknown CLIP architecture 'ViT-B-33'"),
        (["--num-envs", "0"], "--num-envs must be >= 1"),
        (["--prompt", "pole and cart", "--alpha", "0.5"], "same embedding"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, args, message):
    clip_model = [] if "--clip-model" in args else ["--clip-model", tiny_clip_spec]
    result = run_script(SCRIPT, [*clip_model, *args], tmp_path)
    assert_one_line_error(result, "error:", message)
    assert not os.path.exists(tmp_path / "runs")  # nothing half-made left behind


def test_dqn_learns_cartpole_from_ground_truth_reward(tmp_path):
    args = ["--reward", "ground-truth", "--total-timesteps", 15000, "--learning-starts", 1000, "--train-frequency", 1,
            "--exploration-fraction", 0.3, "--target-network-frequency", 200, "--learning-rate", 1e-3, "--seed", 1]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _, _ = read_scalars(tmp_path)
    assert "charts/episodic_clip_return" not in scalars  # no CLIP in this mode
    learned = np.mean(scalars["charts/episodic_ground_truth_return"][-5:])
    random_returns, _ = random_policy_rollouts(20, episode_length=200)
    assert learned > 100 and learned > 4 * random_returns.mean(), (learned, random_returns.mean())


def test_dqn_learns_to_keep_the_pole_up_from_the_tiny_clip_reward_alone(tmp_path):
    """The whole path image -> embedding -> reward -> learning, offline: the reward is the CLIP
    the project trained on CartPole frames; the ground truth is only logged. (A longer run with
    the default hyper-parameters: bench/dqn_tiny_clip_learning.py.)"""
    tiny_cartpole_clip = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny-cartpole-clip-for-tests")
    args = ["--clip-model", f"local-dir:{tiny_cartpole_clip}", "--total-timesteps", 14000, "--num-envs", 4,
            "--learning-starts", 1000, "--train-frequency", 1, "--exploration-fraction", 0.3,
            "--target-network-frequency", 200, "--learning-rate", 1e-3, "--seed", 1]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _, _ = read_scalars(tmp_path)
    learned = np.mean(scalars["charts/episodic_ground_truth_return"][-8:])
    random_returns, _ = random_policy_rollouts(20, episode_length=200)
    assert learned > 100 and learned > 4 * random_returns.mean(), (learned, random_returns.mean())
    # ... and it got there by raising the CLIP return it was trained on.
    clip_returns = scalars["charts/episodic_clip_return"]
    assert np.mean(clip_returns[-8:]) > np.mean(clip_returns[:8]) + 20
