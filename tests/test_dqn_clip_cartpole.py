"""dqn_clip_cartpole.py end to end: CLIP-rewarded run with a tiny CLIP, errors, and a DQN that learns."""

import glob
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import clip_reward
import clip_envs
from dqn_clip_cartpole import QNetwork
from helpers import assert_finite, exit_message, read_scalars, run_script, start_script

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
            "--learning-starts", 100, "--train-frequency", 1, "--capture-video", "--save-model", "--seed", 3,
            "--image-frequency", 200]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_and_ground_truth_scalars(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    for tag in ["charts/episodic_clip_return", "charts/episodic_return", "charts/task_fraction", "charts/success",
                "charts/episodic_length", "charts/SPS", "charts/epsilon", "losses/td_loss", "losses/q_values"]:
        assert_finite(scalars.get(tag))
    # 2 envs x 600 / 2 steps, each episode 100 steps plus the step that resets it.
    assert len(scalars["charts/episodic_clip_return"]) == 4
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 4
    ground_truth = np.array(scalars["charts/episodic_return"])  # CleanRL's tag: the env's own return, steps with the pole up
    np.testing.assert_allclose(scalars["charts/task_fraction"], ground_truth / EPISODE_LENGTH, rtol=1e-6)
    # the paper's rule, as evaluate.py's: the pole up on at least half of the episode's steps
    np.testing.assert_array_equal(scalars["charts/success"], (ground_truth >= EPISODE_LENGTH / 2).astype(float))
    assert np.all((ground_truth >= 0) & (ground_truth <= EPISODE_LENGTH))
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.0|" in hyperparameters and "|prompt|" in hyperparameters
    assert "SPS=" in result.stdout and "clip_return=" in result.stdout
    assert "XDG_RUNTIME_DIR" not in result.stderr  # pygame draws off screen without asking for a display
    assert "Overwriting existing videos" not in result.stderr  # the async envs' dummy env 0 made the folder, nothing more


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


def test_a_real_tensorboard_serves_the_runs_frame_grids_reward_histogram_and_episode_video(clip_run):
    """What a reader of the run sees: TensorBoard itself, started on the run's folder, read back over its HTTP API."""
    cwd, _ = clip_run
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", os.path.join(cwd, "runs"), "--host",
                               "127.0.0.1", "--port", "0", "--load_fast", "false"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            assert line, "TensorBoard exited before serving"
            url = next(iter(re.findall(r"(http://127\.0\.0\.1:\d+)/", line)), None)
        (run,) = os.listdir(os.path.join(cwd, "runs"))

        def get(path, **query):
            for _ in range(100):  # the server loads the event files a moment after it starts listening
                body = urllib.request.urlopen(f"{url}/data/plugin/{path}?{urllib.parse.urlencode(query)}", timeout=30).read()
                if body not in (b"{}", b"[]"):
                    return body
                time.sleep(0.2)
            return body

        image_tags = json.loads(get("images/tags"))[run]
        assert {"images/highest_clip_reward", "images/lowest_clip_reward", "videos/episode"} <= set(image_tags), image_tags
        assert "rewards/clip_reward" in json.loads(get("histograms/tags"))[run]
        # writes at steps 200, 400 and 600 (--image-frequency 200 over 600 steps)
        grids = json.loads(get("images/images", run=run, tag="images/highest_clip_reward"))
        assert [grid["step"] for grid in grids] == [200, 400, 600]
        grid = Image.open(io.BytesIO(get("images/individualImage", blob_key=grids[-1]["query"].split("blob_key=")[-1])))
        assert grid.format == "PNG" and grid.width > grid.height > 0
        (video,) = json.loads(get("images/images", run=run, tag="videos/episode"))[:1]
        gif = Image.open(io.BytesIO(get("images/individualImage", blob_key=video["query"].split("blob_key=")[-1])))
        assert gif.format == "GIF" and gif.n_frames > 10
    finally:
        server.terminate()
        server.wait(timeout=30)


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
        (["--hidden-sizes", "0", "84"], "--hidden-sizes must be >= 1"),
        (["--gradient-steps", "0"], "--gradient-steps must be >= 1"),
        (["--prompt", "pole and cart", "--alpha", "0.5"], "same embedding"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, monkeypatch, args, message):
    clip_model = [] if "--clip-model" in args else ["--clip-model", tiny_clip_spec]
    assert message in exit_message(SCRIPT, [*clip_model, *args], tmp_path, monkeypatch)  # and no runs/ folder left


def test_dqn_learns_cartpole_from_ground_truth_reward(tmp_path):
    args = ["--reward", "ground-truth", "--total-timesteps", 15000, "--learning-starts", 1000, "--train-frequency", 1,
            "--exploration-fraction", 0.3, "--target-network-frequency", 200, "--learning-rate", 1e-3, "--seed", 1]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _, _ = read_scalars(tmp_path)
    assert "charts/episodic_clip_return" not in scalars  # no CLIP in this mode
    learned = np.mean(scalars["charts/episodic_return"][-5:])
    random_returns, _ = random_policy_rollouts(20, episode_length=200)
    assert learned > 100 and learned > 4 * random_returns.mean(), (learned, random_returns.mean())


TINY_CARTPOLE_CLIP = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny-cartpole-clip-for-tests")


def learn_from_the_tiny_clip(prompts, tmp_path, processes=1):
    """14,000 steps of DQN per prompt, whose only reward is the CLIP the project trained on CartPole frames (the
    ground truth is only logged), then evaluate.py on the final policy. The runs go side by side, one per core.
    Returns {prompt: (mean ground-truth return of the last 8 episodes, CLIP returns, evaluated success rate)}; with
    `processes` > 1, each run goes over that many torchrun processes (and logs the episodes of rank 0's envs)."""
    args = ["--clip-model", f"local-dir:{TINY_CARTPOLE_CLIP}", "--total-timesteps", 14000, "--num-envs", 4,
            "--learning-starts", 1000, "--train-frequency", 1, "--exploration-fraction", 0.3,
            "--target-network-frequency", 200, "--learning-rate", 1e-3, "--seed", 1, "--no-async-envs"]  # less CPU, same run
    folders = {prompt: tmp_path / f"prompt{i}" for i, prompt in enumerate(prompts)}
    for folder in folders.values():
        folder.mkdir()
    runs = {prompt: start_script(SCRIPT, [*args, "--prompt", prompt], folders[prompt], processes) for prompt in prompts}
    for process in runs.values():
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
    results = {}
    for prompt, cwd in folders.items():
        scalars, _, _ = read_scalars(cwd)
        (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
        evaluation = run_script("evaluate.py", [run_dir, "--episodes", 10, "--video-episodes", 0], cwd)  # the paper's evaluation
        assert evaluation.returncode == 0, evaluation.stderr
        success_rate = float(evaluation.stdout.split("success rate ")[1].split(",")[0])
        results[prompt] = np.mean(scalars["charts/episodic_return"][-8:]), scalars["charts/episodic_clip_return"], success_rate
    return results


def test_the_tiny_clip_reward_alone_teaches_the_pole_up_and_the_opposite_prompt_teaches_it_down(tmp_path):
    """The whole path image -> embedding -> reward -> learning, offline. With the upright prompt DQN balances the pole;
    with the same seed and budget and the goal "pole fallen to the left" it raises its CLIP return just as well and keeps
    the pole down. A script that learned from the env's own reward, whatever it logs, would balance the pole in both.
    (A longer run with the default hyper-parameters: bench/dqn_tiny_clip_learning.py.)"""
    upright, fallen = "pole vertically upright on top of the cart", "pole fallen to the left"
    results = learn_from_the_tiny_clip([upright, fallen], tmp_path)
    random_returns, _ = random_policy_rollouts(20, episode_length=200)
    learned, clip_returns, success_rate = results[upright]
    assert learned > 100 and learned > 4 * random_returns.mean(), (learned, random_returns.mean())
    assert np.mean(clip_returns[-8:]) > np.mean(clip_returns[:8]) + 20  # it got there by raising its CLIP return
    assert success_rate >= 0.8  # evaluate.py's deterministic policy: the pole up for at least half of each episode
    learned, clip_returns, success_rate = results[fallen]
    assert learned < 50, learned
    assert np.mean(clip_returns[-8:]) > np.mean(clip_returns[:8]) + 20
    assert success_rate <= 0.2


def test_track_logs_to_weights_and_biases_offline_with_videos(tiny_clip_spec, tmp_path, monkeypatch):
    """--track as in CleanRL (TensorBoard synced, config, videos), in wandb's offline mode: nothing leaves the machine."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 250, "--episode-length", 50, "--learning-starts", 100,
            "--track", "--wandb-project-name", "vlmrm-test", "--capture-video"]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    (offline_run,) = glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*"))
    assert glob.glob(os.path.join(offline_run, "*.wandb"))  # the run's synced scalars, to `wandb sync` later
    assert glob.glob(os.path.join(offline_run, "files", "media", "videos", "*.mp4"))
    with open(glob.glob(os.path.join(offline_run, "*.wandb"))[0], "rb") as f:
        record = f.read()  # wandb's own binary log: the config and the synced TensorBoard scalars are in it by name
    for key in (b"device", b"clip_model", b"charts/episodic_clip_return", b"losses/td_loss"):
        assert key in record, key

    # The same command with --resume continues the same wandb run (wandb's resume, by the run's id).
    import run_utils

    (run_dir,) = glob.glob(os.path.join(tmp_path, "runs", "*"))
    result = run_script(SCRIPT, [*args, "--resume", run_dir], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the run is complete (250 steps)" in result.stdout
    offline_runs = glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*"))
    assert len(offline_runs) == 2
    assert all(path.endswith("-" + run_utils.wandb_id(os.path.basename(run_dir))) for path in offline_runs), offline_runs


def test_cuda_without_a_gpu_says_it_runs_on_the_cpu_and_logs_the_device(tiny_clip_spec, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 60, "--episode-length", 20, "--learning-starts", 30, "--cuda"]
    result = run_script(SCRIPT, args, tmp_path)  # --cuda after run_script's --no-cuda: the last flag wins
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU found: running on the CPU" in result.stdout
    _, events, _ = read_scalars(tmp_path)
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|cuda|True|" in hyperparameters and "|device|cpu|" in hyperparameters
