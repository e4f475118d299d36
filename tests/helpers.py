"""Running the training scripts as a user would, and reading back what they logged."""

import glob
import math
import os
import subprocess
import sys
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO_ROOT


def script_command(script, args, processes=1):
    """The command line of a top-level script on the CPU; with processes > 1, one run over that many processes, started
    by PyTorch's torchrun (gloo on the CPU) on a free local port."""
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return [sys.executable, *launcher, os.path.join(REPO_ROOT, script), "--no-cuda", *map(str, args)]


def script_env():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    # One torch thread per process: the script runs beside pytest on few cores, and oversubscribed threads are 8-20x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_script(script, args, cwd, timeout=600, processes=1):
    """Run a top-level script in `cwd` (where it writes runs/ and videos/); returns the CompletedProcess."""
    command = script_command(script, args, processes)
    return subprocess.run(command, cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout)


def start_script(script, args, cwd, processes=1):
    """Like run_script, without waiting, in a process group of its own (signals can go to the script and its env
    workers together, as Ctrl-C in a terminal sends them): returns the Popen (stdout and stderr piped, as text)."""
    return subprocess.Popen(script_command(script, args, processes), cwd=cwd, env=script_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_checkpoint(process, cwd, timeout=300):
    """Block until the run has written its first periodic checkpoint."""
    deadline = time.time() + timeout
    while not glob.glob(os.path.join(cwd, "runs", "*", "checkpoints", "step_*.pt")):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.05)


def logged(cwd):
    """{tag: [(step, value)]} of the one run under cwd, as TensorBoard shows it (steps purged on resume dropped)."""
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"] if tag != "charts/SPS"}


def read_scalars(cwd):
    """{tag: [values in step order]} from the one TensorBoard run under cwd/runs."""
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events, run_dir


def assert_finite(values):
    assert values and all(math.isfinite(v) for v in values), values


def assert_one_line_error(result, *fragments):
    """A bad argument ends the run with a non-zero exit and one readable error line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last_line, result.stderr


def exit_message(script, args, cwd, monkeypatch, new_run=True):
    """Run a script in this process up to its argument checks (no 5 s of imports per case); returns the one-line
    error it exits with. Input that gets through the checks reaches the TensorBoard writer, which fails the test."""
    import runpy
    import signal

    import pytest

    import run_utils

    def run_started(*args, **kwargs):
        raise AssertionError(f"the run started: {args} got through the checks")

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, "--no-cuda", *map(str, args)])
    monkeypatch.setattr(run_utils, "SummaryWriter", run_started)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(os.path.join(REPO_ROOT, script), run_name="__main__")
    finally:
        for number, handler in handlers.items():  # the script's own SIGTERM/SIGINT handlers end with it
            signal.signal(number, handler)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    runs = os.path.join(cwd, "runs")
    assert not new_run or not os.path.isdir(runs) or not os.listdir(runs)  # nothing half-made left behind
    return message
