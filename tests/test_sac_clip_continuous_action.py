"""sac_clip_continuous_action.py, the CLIP reward on any gymnasium env, and clip_reward_vec_env's adapters (gymnasium,
Stable-Baselines3): what reaches CLIP, what is logged beside it, the env's own reward kept, bad input in one line.
The stored reward of every transition is checked in test_reward_wiring.py, resume after a signal in test_checkpoints.py."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import clip_envs
import clip_reward
import run_utils
from conftest import REPO_ROOT
from helpers import assert_one_line_error, exit_message, read_scalars, run_script

SCRIPT = "sac_clip_continuous_action.py"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TINY_PENDULUM_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-pendulum-clip-for-tests"
SHORT = ["--total-timesteps", 440, "--num-envs", 2, "--learning-starts", 200, "--batch-size", 16, "--buffer-size", 1000]


@pytest.mark.parametrize("args, message", [
    (["--env-id", "Pendulm-v1", "--prompt", "up"], "--env-id Pendulm-v1 is not a registered gymnasium env; did you mean Pendulum-v1"),
    (["--env-id", "CartPole-v1", "--prompt", "up"], "discrete action space (Discrete(2))"),
    (["--env-id", "CartPole-v1", "--prompt", "up"], "dqn_clip_cartpole.py"),
    (["--env-id", "custom_envs:NoRenderEnv-v0", "--prompt", "up"], "cannot render rgb_array frames"),
    (["--env-id", "custom_envs:FloatFrameEnv-v0", "--prompt", "up"], "renders float32 (40, 40, 3) frames; CLIP needs uint8 RGB"),
    (["--env-id", "custom_envs:GrayFrameEnv-v0", "--prompt", "up"], "renders uint8 (40, 40) frames; CLIP needs uint8 RGB"),
    (["--env-id", "custom_envs:TinyContinuousEnv-v0", "--prompt", "up", "--render-size", 41], "--render-size 41 is larger than"),
    (["--env-id", "Pendulum-v1"], "--prompt must be given"),
    (["--prompt", "up", "--alpha", 0.5], "--alpha must be in [0, 1], and > 0 only with a --baseline-prompt"),
    (["--task", "pendulum-upright", "--env-id", "InvertedPendulum-v5"], "--env-id must be the --task's env"),
    (["--prompt", "up", "--render-size", 4], "--render-size must be >= 8"),
], ids=lambda value: " ".join(map(str, value)) if isinstance(value, list) else None)  # fmt: skip
def test_an_env_sac_or_clip_cannot_use_is_refused_in_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)  # custom_envs, for the process that makes and renders the env
    assert message in exit_message(SCRIPT, ["--clip-model", TINY_PENDULUM_CLIP, *args], tmp_path, monkeypatch)


def test_the_largest_render_size_an_env_gives_is_accepted(monkeypatch):
    """--render-size up to the env's own frame (40 px here) passes; one more pixel is refused (the case above)."""
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)
    assert clip_envs.check_env("custom_envs:TinyContinuousEnv-v0", 40) == (40, 40, 3)


def test_a_bad_env_ends_the_process_with_one_line_and_writes_nothing(tmp_path):
    result = run_script(SCRIPT, ["--env-id", "CartPole-v1", "--prompt", "a pole upright"], tmp_path)
    assert_one_line_error(result, "discrete action space")
    assert not os.path.exists(tmp_path / "runs")


def test_a_resumed_run_refuses_another_env_id(tmp_path, monkeypatch):
    args = ["--clip-model", TINY_PENDULUM_CLIP, "--task", "pendulum-upright", *SHORT, "--checkpoint-frequency", 220]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = os.listdir(tmp_path / "runs")
    message = exit_message(SCRIPT, ["--resume", f"runs/{run}", "--env-id", "InvertedPendulum-v5"], tmp_path, monkeypatch,
                           new_run=False)  # fmt: skip
    assert "--env-id 'InvertedPendulum-v5' differs from the run's 'Pendulum-v1'" in message


@pytest.mark.parametrize("bench", ["sac_tiny_clip_pendulum.py", "sac_tiny_clip_learning.py", "dqn_tiny_clip_learning.py",
                                   "sac_tiny_clip_kneeling.py"])  # fmt: skip
def test_every_learning_bench_refuses_seeds_without_a_value(bench):
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", bench), "--seeds"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert_one_line_error(result, "--seeds needs at least one seed")


def test_a_task_run_logs_success_and_the_envs_own_return_beside_clips(tmp_path):
    """--task pendulum-upright: frames resized to --render-size in the workers, charts/success from the goal, the env's
    own return as charts/episodic_return beside the CLIP return, and the per-window CLIP-vs-env correlation."""
    args = ["--clip-model", TINY_PENDULUM_CLIP, "--task", "pendulum-upright", "--render-size", 64, *SHORT,
            "--image-frequency", 200]  # fmt: skip
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "success: the goal holds (within 0.3 rad of upright) on at least half of an episode's steps" in result.stdout
    scalars, events, _ = read_scalars(tmp_path)
    assert len(scalars["charts/success"]) == len(scalars["charts/episodic_return"]) == 2  # 220 steps per env: one episode
    assert all(-1700 < value < 0 for value in scalars["charts/episodic_return"])  # Pendulum's own (costs), not CLIP's
    assert all(0 < value <= 200 for value in scalars["charts/episodic_clip_return"])  # 200 steps of a reward in (0, 1]
    assert scalars["charts/episodic_length"] == [200, 200]
    correlations = scalars["rewards/clip_vs_env_correlation"]
    assert len(correlations) == 2 and all(-1 <= value <= 1 for value in correlations)
    (grid,) = events.Images("images/highest_clip_reward")[:1]
    assert grid.height == 160 + 16  # 64 px frames scaled to the grid's thumbnails, each labelled


def test_a_prompt_without_a_task_reports_no_success(tmp_path):
    args = ["--clip-model", TINY_PENDULUM_CLIP, "--prompt", "a pendulum doing a loop", *SHORT, "--image-frequency", 0]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "success: none is computed for this prompt" in result.stdout
    assert "success=" not in result.stdout  # nor in the progress line
    scalars, _, _ = read_scalars(tmp_path)
    assert "charts/episodic_clip_return" in scalars and "charts/episodic_return" in scalars
    assert not {"charts/success", "charts/task_fraction"} & set(scalars)


def test_frames_are_resized_where_the_env_runs(monkeypatch):
    """With a size, FrameInInfo hands out the whole frame resized (bicubic) to a square; without, the env's own."""
    env = clip_envs.FrameInInfo(gym.make("Pendulum-v1", render_mode="rgb_array"), size=48)
    _, info = env.reset(seed=0)
    own = env.env.render()
    assert info["frame"].shape == (48, 48, 3) and info["frame"].dtype == np.uint8 and own.shape == (500, 500, 3)
    np.testing.assert_array_equal(info["frame"], clip_envs.square_frame(own, 48))
    assert clip_envs.FrameInInfo(gym.make("Pendulum-v1", render_mode="rgb_array")).reset(seed=0)[1]["frame"].shape == own.shape


@pytest.mark.parametrize("clip, env, expected", [
    ([1, 2, 3, 4], [2, 4, 6, 8], 1.0), ([1, 2, 3, 4], [8, 6, 4, 2], -1.0), ([1, 2, 3, 4], [1, 1, 1, 1], None),
    ([1, 1, 1], [1, 2, 3], None), ([1], [1], None), ([1, 2, 3], [], None), ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),
])  # fmt: skip
def test_clip_vs_env_correlation(clip, env, expected):
    correlation = run_utils.clip_vs_env_correlation(clip, env)
    assert correlation == expected if expected is None else correlation == pytest.approx(expected)


def test_the_reward_window_correlates_only_the_transitions_it_keeps():
    class Scalars:
        def __init__(self):
            self.values = {}

        def add_scalar(self, tag, value, step):
            self.values[tag] = value

        def add_image(self, *args, **kwargs):
            pass

        add_histogram = add_image

    writer, frames = Scalars(), np.zeros((3, 8, 8, 3), np.uint8)
    window = run_utils.RewardWindow(writer, frequency=6)
    window.write_if_due(3)
    zeros = np.zeros(3)
    window.add(frames, [0.1, 0.2, 0.9], zeros, zeros, keep=[True, True, False], env_rewards=[-3.0, -2.0, 50.0])
    window.add(frames, [0.3, 0.4, 0.5], zeros, zeros, keep=[True, True, True], env_rewards=[-1.0, 0.0, 1.0])
    window.write_if_due(6)
    kept_clip, kept_env = [0.1, 0.2, 0.3, 0.4, 0.5], [-3.0, -2.0, -1.0, 0.0, 1.0]  # the autoreset step's pair left out
    assert writer.values["rewards/clip_vs_env_correlation"] == pytest.approx(np.corrcoef(kept_clip, kept_env)[0, 1])
    assert writer.values["rewards/clip_vs_env_correlation"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------------
# The adapters: the CLIP reward for other code
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pendulum_reward_model():
    return clip_reward.load_reward_model(TINY_PENDULUM_CLIP, ["a pendulum pointing straight up"], ["a pendulum"], 0.5,
                                         device="cpu")  # fmt: skip


def test_the_gymnasium_adapter_pays_each_env_for_its_own_frame_after_the_step(pendulum_reward_model):
    """InvertedPendulum ends episodes by termination: every env's reward, terminal steps included, is CLIP's reward of
    the frame that env shows right after its step, and the env's own reward stays in the infos."""
    from clip_reward_vec_env import CLIPRewardVectorEnv

    make = lambda: clip_envs.FrameInInfo(gym.make("InvertedPendulum-v5", render_mode="rgb_array"), size=48)  # noqa: E731
    envs = CLIPRewardVectorEnv(gym.vector.SyncVectorEnv([make, make, make]), pendulum_reward_model)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    terminal_steps, resetting = 0, np.zeros(3, dtype=bool)
    for _ in range(40):
        _, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
        shown = np.stack([clip_envs.square_frame(env.env.render(), 48) for env in envs.env.envs])  # rendered afresh
        np.testing.assert_allclose(rewards, pendulum_reward_model(shown).numpy(), rtol=1e-5)
        assert len(set(rewards.tolist())) > 1  # the envs' frames differ, so a mix-up would show
        # InvertedPendulum-v5's own reward: 1 while the pole stays up, 0 on termination and on the autoreset step
        np.testing.assert_array_equal(infos["env_reward"], (~terminations & ~resetting).astype(float))
        terminal_steps, resetting = terminal_steps + terminations.sum(), terminations | truncations
    assert terminal_steps > 0


def test_sb3_sac_trains_through_the_adapter_on_clips_reward(pendulum_reward_model, monkeypatch):
    """Stable-Baselines3's SAC learns through CLIPRewardSB3VecEnv: its replay buffer holds, per step and env, CLIP's
    reward of the frame that env showed after the step (two envs, in order); at an episode's end that is its last frame,
    not the frame of the reset SB3 does inside the step; infos keep Pendulum's own reward."""
    pytest.importorskip("stable_baselines3", reason="pip install stable-baselines3")
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from clip_reward_vec_env import CLIPRewardSB3VecEnv

    scored, steps = [], []
    real_forward = type(pendulum_reward_model).forward

    def forward(self, frames):
        rewards = real_forward(self, frames)
        scored.append((np.array(frames), rewards.numpy().copy()))
        return rewards

    def make():
        return clip_envs.FrameInInfo(Monitor(gym.make("Pendulum-v1", render_mode="rgb_array", max_episode_steps=50)), size=64)

    monkeypatch.setattr(type(pendulum_reward_model), "forward", forward)
    venv = DummyVecEnv([make, make])
    real_step_wait = DummyVecEnv.step_wait

    def step_wait(self):
        observations, rewards, dones, infos = real_step_wait(self)
        reset_frames = [self.reset_infos[i]["frame"].copy() if done else None for i, done in enumerate(dones)]
        steps.append((rewards.copy(), dones.copy(), reset_frames))
        return observations, rewards, dones, infos

    monkeypatch.setattr(DummyVecEnv, "step_wait", step_wait)
    torch.manual_seed(0)
    model = SAC("MlpPolicy", CLIPRewardSB3VecEnv(venv, pendulum_reward_model), learning_starts=100, batch_size=32, seed=0,
                device="cpu")  # fmt: skip
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(300)  # 150 vector steps of 2 envs: 3 episodes each
    assert len(scored) == len(steps) == 150 and model.replay_buffer.pos == 150
    np.testing.assert_array_equal(model.replay_buffer.rewards[:150], np.stack([rewards for _, rewards in scored]))
    ends = [(t, i) for t, (_, dones, _) in enumerate(steps) for i in np.flatnonzero(dones)]
    assert len(ends) == 6
    for t, i in ends:  # the episode's last frame was paid for, not the next episode's first
        assert not np.array_equal(scored[t][0][i], steps[t][2][i])
    env_rewards = np.stack([rewards for rewards, _, _ in steps])
    assert (env_rewards <= 0).all() and not np.allclose(model.replay_buffer.rewards[:150], env_rewards, atol=0.5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.actor.parameters()))  # SAC updated its actor


def test_the_adapters_name_the_missing_frame_wrapper(pendulum_reward_model):
    from clip_reward_vec_env import CLIPRewardVectorEnv

    envs = CLIPRewardVectorEnv(gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")]), pendulum_reward_model)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="wrap each env in clip_envs.FrameInInfo"):
        envs.step(envs.action_space.sample())


def test_the_docs_python_examples_run_as_written(tmp_path):
    """docs/your_own_environment.md's Python blocks, run from a folder with the project's assets/ (as from the
    repository): the frame CLIP sees is saved, and SB3's SAC trains through the adapter (fewer steps) and saves."""
    import re

    pytest.importorskip("stable_baselines3", reason="pip install stable-baselines3")
    with open(os.path.join(REPO_ROOT, "docs", "your_own_environment.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 2
    os.symlink(os.path.join(REPO_ROOT, "assets"), tmp_path / "assets")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    outputs = []
    for block in blocks:
        code = re.sub(r"TOTAL_STEPS = [0-9_]+", "TOTAL_STEPS = 2100", block)  # 100 updates after learning starts
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert 0 < float(outputs[0].strip()) <= 1  # the frame's CLIP reward
    assert (tmp_path / "what_clip_sees.png").exists() and (tmp_path / "sac_pendulum_clip.zip").exists()


def test_evaluate_plays_episodes_as_the_env_ends_them(tiny_clip_spec, tmp_path):
    """evaluate.py on a run of the generic script: each episode runs until InvertedPendulum terminates it (its own
    return is its length - 1), its video holds exactly its frames, and a --prompt without --task gets no success."""
    import csv
    import glob

    from moviepy import VideoFileClip

    args = ["--clip-model", tiny_clip_spec, "--env-id", "InvertedPendulum-v5", "--prompt", "a pole balanced upright",
            "--render-size", 48, "--total-timesteps", 200, "--num-envs", 2, "--learning-starts", 100]  # fmt: skip
    assert run_script(SCRIPT, args, tmp_path).returncode == 0
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "evaluate.py"), run_dir, "--episodes", "5",
                             "--num-envs", "3", "--video-episodes", "5", "--no-cuda"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no automatic success" in result.stdout and "success rate" not in result.stdout
    (folder,) = glob.glob(f"{run_dir}/eval_step_*")
    with open(os.path.join(folder, "evaluation.csv")) as f:
        rows = list(csv.DictReader(f))
    lengths = [int(row["length"]) for row in rows]
    assert len(rows) == 5 and len(set(lengths)) > 1 and all(row["success"] == "" for row in rows)
    assert [float(row["ground_truth_return"]) for row in rows] == [length - 1 for length in lengths]
    for row in rows:
        with VideoFileClip(os.path.join(folder, f"eval-episode-{row['episode']}.mp4")) as clip:
            assert round(clip.duration * clip.fps) == int(row["length"])


@pytest.mark.parametrize("args, warned", [
    (["--reward", "env", "--render-size", 32], True),
    (["--reward", "env", "--prompt", "a pendulum pointing straight up"], True),
    (["--reward", "env", "--task", "pendulum-upright"], False),
    (["--task", "pendulum-upright", "--render-size", 32], False),
])  # fmt: skip
def test_a_flag_that_does_nothing_with_the_env_reward_is_warned_about(args, warned, tmp_path, monkeypatch, capsys):
    """Run in this process up to the run's folder (where the warnings have been given): one line, or none."""
    import runpy

    def stop_before_the_run(*arguments, **keywords):
        raise SystemExit("the run would start here")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_utils, "open_run", stop_before_the_run)
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--no-cuda", "--clip-model", TINY_PENDULUM_CLIP, *map(str, args)])
    with pytest.raises(SystemExit, match="the run would start here"):
        runpy.run_path(os.path.join(REPO_ROOT, SCRIPT), run_name="__main__")
    assert ("warning: --reward env learns from the env's own reward" in capsys.readouterr().err) == warned


def test_track_and_capture_video_on_any_env(tiny_clip_spec, tmp_path, monkeypatch):
    """--track (wandb offline: nothing leaves the machine) and --capture-video on InvertedPendulum: the episode videos,
    at the env's own frame size, reach wandb and TensorBoard; the synced scalars include the CLIP and env returns."""
    import glob

    from moviepy import VideoFileClip

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = ["--clip-model", tiny_clip_spec, "--env-id", "InvertedPendulum-v5", "--prompt", "a pole balanced upright",
            "--render-size", 48, "--total-timesteps", 120, "--num-envs", 2, "--learning-starts", 60, "--track",
            "--wandb-project-name", "vlmrm-test", "--capture-video"]  # fmt: skip
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    (offline_run,) = glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*"))
    assert glob.glob(os.path.join(offline_run, "files", "media", "videos", "*.mp4"))
    with open(glob.glob(os.path.join(offline_run, "*.wandb"))[0], "rb") as f:
        record = f.read()
    for key in (b"env_id", b"charts/episodic_clip_return", b"charts/episodic_return"):
        assert key in record, key
    videos = sorted(glob.glob(str(tmp_path / "videos" / "*" / "*.mp4")))
    assert videos
    with VideoFileClip(videos[0]) as clip:
        assert tuple(clip.size) == (480, 480)  # the env's own frame, not the 48 px CLIP sees
    _, events, _ = read_scalars(tmp_path)
    assert "videos/episode" in events.Tags()["images"]
