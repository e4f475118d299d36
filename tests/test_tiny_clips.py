"""The tiny-CLIP scripts never replace a committed test asset by accident."""

import hashlib
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from helpers import assert_one_line_error


@pytest.mark.parametrize("env", ["cartpole", "mountaincar", "humanoid"])
def test_making_a_tiny_clip_refuses_to_overwrite_the_committed_model(env, tmp_path):
    weights = os.path.join(REPO_ROOT, "assets", f"tiny-{env}-clip-for-tests", "open_clip_model.safetensors")
    with open(weights, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    script = os.path.join(REPO_ROOT, "assets", f"make_tiny_{env}_clip.py")
    result = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "error:", "already holds a model", "--overwrite")
    with open(weights, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before
