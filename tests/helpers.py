"""Running the training scripts as a user would, and reading back what they logged."""

import glob
import math
import os
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO_ROOT


def run_script(script, args, cwd, timeout=600):
    """Run a top-level script in `cwd` (where it writes runs/ and videos/); returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    # One torch thread per process: the script runs beside pytest on few cores, and oversubscribed threads are 8-20x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, os.path.join(REPO_ROOT, script), "--no-cuda", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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
