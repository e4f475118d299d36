"""Long runs survive faults: checkpoints, --resume, SIGTERM/SIGINT/SIGKILL, run folders that never collide."""

import errno
import glob
import os
import signal
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT
from helpers import assert_one_line_error, exit_message, logged, run_script, start_script, wait_for_checkpoint

TINY_CARTPOLE_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests"
TINY_MOUNTAINCAR_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-mountaincar-clip-for-tests"

# Short runs that train, log losses and episodes, and write two periodic checkpoints before their end.
RUNS = {
    "dqn_clip_cartpole.py": ["--clip-model", TINY_CARTPOLE_CLIP, "--total-timesteps", 1800, "--num-envs", 2,
                             "--learning-starts", 300, "--train-frequency", 2, "--buffer-size", 3000,
                             "--checkpoint-frequency", 600, "--episode-length", 100, "--image-frequency", 400],
    "sac_clip_mountaincar.py": ["--clip-model", TINY_MOUNTAINCAR_CLIP, "--total-timesteps", 900, "--num-envs", 2,
                                "--learning-starts", 200, "--batch-size", 32, "--train-frequency", 5, "--gradient-steps", 10,
                                "--buffer-size", 2000, "--checkpoint-frequency", 300, "--episode-length", 100,
                                "--image-frequency", 200],
    "sac_clip_humanoid.py": ["--total-timesteps", 180, "--num-envs", 2, "--episode-length", 30, "--render-size", 48,
                             "--learning-starts", 60, "--batch-size", 32, "--train-frequency", 3, "--gradient-steps", 10,
                             "--hidden-sizes", 32, 32, "--buffer-size", 1000, "--checkpoint-frequency", 60,
                             "--image-frequency", 50],
    "sac_clip_continuous_action.py": ["--clip-model", f"local-dir:{REPO_ROOT}/assets/tiny-pendulum-clip-for-tests",
                                      "--task", "pendulum-upright", "--render-size", 64, "--total-timesteps", 600,
                                      "--num-envs", 2, "--learning-starts", 200, "--batch-size", 32, "--gradient-steps", 2,
                                      "--buffer-size", 2000, "--checkpoint-frequency", 200, "--image-frequency", 200],
}


def script_args(script, tiny_clip_spec):
    args = RUNS[script]
    return args if "--clip-model" in args else ["--clip-model", tiny_clip_spec, *args]


def checkpoint_steps(cwd):
    return sorted(int(path[-12:-3]) for path in glob.glob(os.path.join(cwd, "runs", "*", "checkpoints", "step_*.pt")))


@pytest.mark.parametrize("script, stop", [("dqn_clip_cartpole.py", signal.SIGTERM), ("sac_clip_mountaincar.py", signal.SIGINT),
                                          ("sac_clip_humanoid.py", signal.SIGTERM),
                                          ("sac_clip_continuous_action.py", signal.SIGTERM)])
def test_a_run_stopped_by_a_signal_resumes_to_the_same_logs(script, stop, tiny_clip_spec, tmp_path):
    """SIGTERM/SIGINT mid-run: a checkpoint at the current step, exit 128+signal with one line; --resume then logs
    exactly what a run that was never interrupted logs (rewards, returns, losses, success), buffer checkpointed."""
    args = [*script_args(script, tiny_clip_spec), "--seed", 3, "--checkpoint-buffer", "--save-model"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    uninterrupted.mkdir(), interrupted.mkdir()
    result = run_script(script, args, uninterrupted)
    assert result.returncode == 0, result.stderr

    process = start_script(script, args, interrupted)
    wait_for_checkpoint(process, interrupted)
    os.killpg(process.pid, stop)  # to the script and its env workers, as Ctrl-C in a terminal or a scheduler does
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + stop, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"stopped by {stop.name} at step"), stderr
    total = RUNS[script][RUNS[script].index("--total-timesteps") + 1]
    stopped_at = checkpoint_steps(interrupted)[-1]
    assert stopped_at < total, "the run ended before the signal: nothing was tested"
    (run_dir,) = glob.glob(str(interrupted / "runs" / "*"))
    assert os.path.exists(f"{run_dir}/checkpoints/buffer_{stopped_at:09d}.pt")

    result = run_script(script, ["--resume", run_dir], interrupted)
    assert result.returncode == 0, result.stderr
    assert f"(step {stopped_at})" in result.stdout
    assert checkpoint_steps(interrupted)[-1] == total
    expected, resumed = logged(uninterrupted), logged(interrupted)
    assert "losses/qf1_loss" in expected or "losses/td_loss" in expected
    assert len(expected["rewards/along_goal_direction"]) >= 2  # windows written before and after the stop, the same
    assert any(step > stopped_at for values in expected.values() for step, _ in values)
    assert resumed == expected
    (model,) = glob.glob(str(uninterrupted / "runs" / "*" / "*.cleanrl_model"))
    (resumed_model,) = glob.glob(f"{run_dir}/*.cleanrl_model")
    torch.testing.assert_close(torch.load(resumed_model), torch.load(model), rtol=0, atol=0)


def test_sigkill_loses_only_the_steps_since_the_last_checkpoint(tmp_path):
    """No checkpoint on SIGKILL, but the last periodic one is whole: the run resumes from it (without the buffer,
    which refills before updates resume) and finishes. It resumes as a preempted user would: the original command
    with --resume appended (flags equal to the run's are accepted)."""
    args = RUNS["dqn_clip_cartpole.py"]
    process = start_script("dqn_clip_cartpole.py", args, tmp_path)
    wait_for_checkpoint(process, tmp_path)
    process.kill()
    process.communicate()
    last = checkpoint_steps(tmp_path)[-1]
    assert last >= 600 and not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.tmp"))
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    result = run_script("dqn_clip_cartpole.py", [*args, "--resume", run_dir], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"(step {last})" in result.stdout and f"refilling it until step {last + 300}" in result.stdout
    assert checkpoint_steps(tmp_path)[-1] == 1800
    losses = logged(tmp_path)["losses/td_loss"]
    assert min(step for step, _ in losses if step > last) > last + 300  # no update on an empty buffer


def test_resume_refuses_other_arguments_and_folders_without_checkpoints(tmp_path, monkeypatch):
    result = run_script("dqn_clip_cartpole.py", ["--resume", str(tmp_path)], tmp_path)
    assert_one_line_error(result, "no checkpoints/step_*.pt")

    from dqn_clip_cartpole import Args

    run = tmp_path / "runs" / "CartPole-v1__dqn_clip_cartpole__3__1"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = {"script": "dqn_clip_cartpole.py", "args": vars(Args(total_timesteps=1800, seed=3)), "global_step": 600,
                  "ranks": [{}]}
    torch.save(checkpoint, run / "checkpoints" / "step_000000600.pt")
    resume = ["--resume", "runs/CartPole-v1__dqn_clip_cartpole__3__1"]
    message = exit_message("dqn_clip_cartpole.py", [*resume, "--total-timesteps", 10], tmp_path, monkeypatch, new_run=False)
    assert "--total-timesteps 10 differs from the run's 1800" in message
    # a flag given with its default value is still a flag given: 1 is not the run's seed
    message = exit_message("dqn_clip_cartpole.py", [*resume, "--seed", 1], tmp_path, monkeypatch, new_run=False)
    assert "--seed 1 differs from the run's 3" in message
    torch.save({**checkpoint, "script": "sac_clip_mountaincar.py"}, run / "checkpoints" / "step_000000600.pt")
    message = exit_message("dqn_clip_cartpole.py", resume, tmp_path, monkeypatch, new_run=False)
    assert "that run was written by sac_clip_mountaincar.py; resume it with that script" in message


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """Folders of the same name (as a run started at the same second would make) are never reused."""
    now = int(time.time())
    taken = [tmp_path / "runs" / f"CartPole-v1__dqn_clip_cartpole__1__{t}" for t in range(now, now + 60)]
    for folder in taken:
        folder.mkdir(parents=True)
    result = run_script("dqn_clip_cartpole.py", ["--reward", "ground-truth", "--total-timesteps", 100, "--learning-starts", 50,
                                                "--save-model"], tmp_path)
    assert result.returncode == 0, result.stderr
    new = set(glob.glob(str(tmp_path / "runs" / "*"))) - set(map(str, taken))
    (folder,) = new
    assert folder.rsplit("__", 1)[1].split("_")[1] == "1", folder
    assert all(not os.listdir(f) for f in taken)
    assert os.path.exists(f"{folder}/dqn_clip_cartpole.cleanrl_model")


@pytest.mark.parametrize("name", ["../outside", "a/b", "", ".hidden", "x y"])
def test_a_bad_exp_name_is_refused(name, tmp_path, monkeypatch):
    assert "--exp-name must be a folder name" in exit_message("dqn_clip_cartpole.py", ["--exp-name", name], tmp_path, monkeypatch)


def test_an_unwritable_output_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("a file where the runs/ folder should be")
    message = exit_message("dqn_clip_cartpole.py", ["--reward", "ground-truth"], tmp_path, monkeypatch)
    assert "cannot create the run folder runs/CartPole-v1__dqn_clip_cartpole__1__" in message


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A full disk halfway through a write: the error reaches the caller and the file under the final name is the
    previous, whole checkpoint; no temporary file is left behind."""
    sys.path.insert(0, REPO_ROOT)
    from run_utils import save_atomic

    path = str(tmp_path / "step_000000100.pt")
    save_atomic({"step": 100}, path)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"step": 200}, path)
    assert torch.load(path) == {"step": 100}
    assert os.listdir(tmp_path) == ["step_000000100.pt"]
