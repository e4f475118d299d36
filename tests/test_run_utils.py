"""run_utils.py on its own: the progress display, the argument rules, the replay buffer's state, and what a failed
write of a checkpoint or of the model says. (Signals, resume and torchrun end to end: test_checkpoints.py and
test_torchrun.py.)"""

import errno
import io
import os
import pathlib
import signal
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import clip_envs
import run_utils


def test_progress_prints_plain_lines_with_the_latest_episodes_where_stdout_is_no_terminal(capsys):
    progress = run_utils.Progress(total_timesteps=1000, start_step=0)
    for step in range(10, 1001, 10):
        if step == 500:  # two episodes end at the same step: the line shows their mean
            progress.episode(clip_return=3.0, success=1.0)
            progress.episode(clip_return=5.0, success=0.0)
        progress.update(step)
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("global_step=") for line in lines)
    assert 10 <= len(lines) <= 101  # every 1% of the run (or minute), not every step
    assert lines[-1].startswith("global_step=1000/1000, SPS=") and lines[-1].endswith("clip_return=4.00, success=0.50")
    (first_with_numbers,) = [line for line in lines if line.startswith("global_step=500/")]
    assert first_with_numbers.endswith("clip_return=4.00, success=0.50")
    assert "clip_return" not in lines[0]  # nothing to show before an episode has ended


def test_progress_is_a_tqdm_bar_on_a_terminal(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(run_utils, "_is_terminal", lambda stream: True)
    monkeypatch.setattr("sys.stdout", screen)
    progress = run_utils.Progress(total_timesteps=200, start_step=100)  # a resumed run starts its bar at its step
    progress.episode(clip_return=1.5, kneeling=0.25, success=0.0)
    progress.update(200)
    progress.close()
    shown = screen.getvalue().split("\r")[-1]
    assert "200/200" in shown and "clip_return=1.50" in shown and "kneeling=0.25" in shown, shown
    assert "global_step=" not in screen.getvalue()


def test_a_run_in_which_no_episode_ends_is_warned_of(capsys):
    args = SimpleNamespace(num_envs=4, total_timesteps=400, episode_length=200, batch_size=4, track=False, capture_video=False)
    run_utils.check_args(args, {})
    assert "--episode-length 200 is longer than each env's 100 steps: no episode ends" in capsys.readouterr().err
    run_utils.check_args(SimpleNamespace(**{**vars(args), "episode_length": 100}), {})
    assert capsys.readouterr().err == ""


def test_rules_name_the_argument_the_value_and_what_is_valid():
    args = SimpleNamespace(num_envs=4, learning_starts=10, total_timesteps=100, hidden_sizes=(64, 0), gamma=float("nan"),
                           batch_size=32, track=False, capture_video=False, episode_length=25)
    rules = {"gamma": run_utils.in_range(0, 1), "hidden_sizes": run_utils.at_least(1), "tau": run_utils.in_range(0, 1, True)}
    with pytest.raises(SystemExit, match=r"^error: --gamma must be in \[0, 1\], got nan$"):
        run_utils.check_args(args, {"gamma": rules["gamma"]})
    with pytest.raises(SystemExit, match=r"^error: --hidden-sizes must be >= 1, got \(64, 0\)$"):
        run_utils.check_args(args, {"hidden_sizes": rules["hidden_sizes"]})
    assert rules["tau"].text == "in (0, 1]" and not rules["tau"].test(0, args) and rules["tau"].test(1, args)
    with pytest.raises(SystemExit, match="--num-envs must be a multiple of the 3 processes, got 4"):
        run_utils.check_args(args, {}, world_size=3)
    assert run_utils.check_args(args, {"total_timesteps": run_utils.COMMON_RULES["total_timesteps"]}) is None


@pytest.mark.parametrize("space", [gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (3,))])
def test_the_replay_buffer_restores_its_state_and_samples_the_same(space):
    observations = gym.spaces.Box(-1, 1, (4,))
    rb = run_utils.ReplayBuffer(5, observations, space, "cpu")
    for i in range(7):  # past its size: it wraps around and is full
        rb.add(np.full(4, i), np.full(4, i + 1), space.sample(), float(i), i % 2)
    assert rb.full and rb.pos == 2 and sorted(rb.rewards) == [2, 3, 4, 5, 6]
    restored = run_utils.ReplayBuffer(5, observations, space, "cpu")
    restored.load_state_dict(rb.state_dict())
    np.random.seed(0)
    sample = rb.sample(8)
    np.random.seed(0)
    again = restored.sample(8)
    for field, value in zip(sample._fields, sample):
        torch.testing.assert_close(getattr(again, field), value, rtol=0, atol=0)
    assert sample.actions.dtype == (torch.int64 if isinstance(space, gym.spaces.Discrete) else torch.float32)
    torch.testing.assert_close(sample.next_observations, sample.observations + 1)  # transitions stay whole


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """A Checkpoints object over one in-process CartPole env, writing into tmp_path/runs/RUN/checkpoints."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "RUN" / "checkpoints").mkdir(parents=True)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    envs = gym.vector.SyncVectorEnv([lambda: clip_envs.FrameInInfo(clip_envs.make_cartpole("CartPole-v1", 20, False), False)])
    envs.reset(seed=0)
    args = SimpleNamespace(checkpoint_frequency=100, num_envs=1, checkpoint_buffer=False, learning_starts=0)
    rb = run_utils.ReplayBuffer(10, envs.single_observation_space, envs.single_action_space, "cpu")
    yield run_utils.Checkpoints("RUN", args, envs, rb, run_utils.NoWriter(), run_utils.StopOnSignal(), {"net": torch.nn.Linear(2, 2)})
    envs.close()
    for number, handler in handlers.items():
        signal.signal(number, handler)


def disk_full(monkeypatch):
    def save(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def test_a_failed_checkpoint_write_says_what_is_kept_and_fails_the_run_at_its_end(checkpoints, monkeypatch, capsys):
    real_save = torch.save
    disk_full(monkeypatch)
    assert checkpoints.due(100, False, np.zeros(1, dtype=bool))
    checkpoints.save(100, 100, obs=None)  # a periodic checkpoint: the run goes on
    assert "could not write runs/RUN/checkpoints/step_000000100.pt (No space left on device); no checkpoint was written" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr(torch, "save", real_save)
    checkpoints.due(200, False, np.zeros(1, dtype=bool))
    checkpoints.save(200, 200, obs=None)
    disk_full(monkeypatch)
    assert checkpoints.due(250, True, np.zeros(1, dtype=bool))  # the end of the run
    with pytest.raises(SystemExit) as exit_info:
        checkpoints.save(250, 250, obs=None)
    assert exit_info.value.code == 1
    assert "the latest checkpoint is runs/RUN/checkpoints/step_000000200.pt" in capsys.readouterr().err


class SummaryRecorder:
    """A SummaryWriter's file writer that keeps each summary it is given, with its step."""

    def __init__(self):
        self.added = []

    def _get_file_writer(self):
        return self

    def add_summary(self, summary, global_step):
        self.added.append((summary, global_step))


def test_a_resumed_run_uploads_only_the_videos_it_writes(checkpoints, monkeypatch):
    """Each episode video reaches TensorBoard once; after --resume (a new process), the videos already on disk do not
    come again, and a file the resumed run writes anew (an episode after the checkpoint, recorded again) does."""
    monkeypatch.setattr(run_utils, "video_summary", lambda tag, path: (tag, os.path.basename(path)))
    monkeypatch.setattr(run_utils, "_uploaded_videos", {})
    videos = pathlib.Path("videos/RUN")
    videos.mkdir(parents=True)
    writer = SummaryRecorder()

    def write(name, nanoseconds):
        (videos / name).write_bytes(b"mp4")
        os.utime(videos / name, ns=(nanoseconds, nanoseconds))

    write("rl-video-episode-0.mp4", 10**18)
    run_utils.upload_videos("RUN", writer, 50)
    run_utils.upload_videos("RUN", writer, 60)
    checkpoints.due(100, False, np.zeros(1, dtype=bool))
    checkpoints.save(100, 100, obs=None)
    write("rl-video-episode-1.mp4", 2 * 10**18)  # after the checkpoint, then the run is preempted
    run_utils.upload_videos("RUN", writer, 120)
    assert writer.added == [(("videos/episode", "rl-video-episode-0.mp4"), 50),
                            (("videos/episode", "rl-video-episode-1.mp4"), 120)]

    monkeypatch.setattr(run_utils, "_uploaded_videos", {})  # the resumed process
    checkpoints.restore(torch.load("runs/RUN/checkpoints/step_000000100.pt", weights_only=False))
    writer.added.clear()
    run_utils.upload_videos("RUN", writer, 101)
    assert writer.added == []
    write("rl-video-episode-1.mp4", 3 * 10**18)  # its episode recorded again
    write("rl-video-episode-8.mp4", 3 * 10**18)
    run_utils.upload_videos("RUN", writer, 130)
    assert writer.added == [(("videos/episode", "rl-video-episode-1.mp4"), 130),
                            (("videos/episode", "rl-video-episode-8.mp4"), 130)]


def test_a_failed_model_write_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch):
    disk_full(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        run_utils.save_model({"weight": torch.zeros(1)}, str(tmp_path / "model.cleanrl_model"))
    assert exit_info.value.code.startswith("error: could not save the model to ") and "No space left" in exit_info.value.code
    assert not list(tmp_path.iterdir())


def make_cartpole_noting_its_signal_handlers():
    env = gym.make("CartPole-v1")
    env.unwrapped.handlers_at_start = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    return env


def test_env_workers_ignore_signals_from_their_first_line():
    """Ctrl-C reaches the worker processes too: from before their env is built, only the training process acts on it."""

    def training_process_handler(signum, frame):
        pass

    # the handlers the workers would inherit, as they would inherit StopOnSignal's
    previous = {number: signal.signal(number, training_process_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        envs = run_utils.vector_env([make_cartpole_noting_its_signal_handlers] * 2, async_envs=True)
        assert isinstance(envs, gym.vector.AsyncVectorEnv)
        assert envs.get_attr("handlers_at_start") == ((signal.SIG_IGN, signal.SIG_IGN),) * 2
        envs.close()
        assert signal.getsignal(signal.SIGINT) is training_process_handler  # gymnasium's env built here to read the spaces
        in_process = run_utils.vector_env([make_cartpole_noting_its_signal_handlers] * 2, async_envs=False)
        assert in_process.get_attr("handlers_at_start")[0] == (training_process_handler,) * 2  # the training process's own
        in_process.close()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
