"""evaluate.py: the paper's evaluation of a run (best checkpoint by training CLIP return, deterministic episodes)."""

import csv
import glob
import math
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from helpers import assert_one_line_error, run_script

TINY_CARTPOLE_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests"
EPISODE_LENGTH = 50


def read_rows(folder):
    with open(os.path.join(folder, "evaluation.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("evaluate_cartpole")
    args = ["--clip-model", TINY_CARTPOLE_CLIP, "--total-timesteps", 1200, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 200, "--train-frequency", 1, "--checkpoint-frequency", 200]
    result = run_script("dqn_clip_cartpole.py", args, cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = glob.glob(str(cwd / "runs" / "*"))
    return cwd, run_dir


def test_evaluate_uses_the_checkpoint_with_the_highest_training_return(cartpole_run):
    cwd, run_dir = cartpole_run
    returns = {}
    for path in glob.glob(f"{run_dir}/checkpoints/step_*.pt"):
        returns[path] = torch.load(path, weights_only=False)["training_return"]
    assert len(returns) == 6 and len({r for r in returns.values() if not math.isnan(r)}) > 2
    best = max((r, p) for p, r in returns.items() if not math.isnan(r))[1]
    result = run_script("evaluate.py", [run_dir, "--episodes", 5, "--num-envs", 3, "--video-episodes", 2], cwd)
    assert result.returncode == 0, result.stderr
    assert f"{best}: the highest training return" in result.stdout
    step = int(best[-12:-3])
    folder = f"{run_dir}/eval_step_{step}"
    rows = read_rows(folder)
    assert [int(row["episode"]) for row in rows] == list(range(5))
    for row in rows:
        fraction = float(row["task_fraction"])
        assert int(row["success"]) == (fraction >= 0.5)  # the paper's rule: the task holds on at least half the steps
        # CartPole's ground truth is 1 per step with the pole up: the same count as the task fraction
        assert float(row["ground_truth_return"]) == pytest.approx(fraction * EPISODE_LENGTH)
        assert math.isfinite(float(row["clip_return"]))
    assert sorted(os.path.basename(p) for p in glob.glob(f"{folder}/*.mp4")) == ["eval-episode-0.mp4", "eval-episode-1.mp4"]
    success_rate = np.mean([int(row["success"]) for row in rows])
    assert f"success rate {success_rate:.2f}" in result.stdout

    # Deterministic policy and seeded episodes: the same numbers again, in a new folder (nothing overwritten).
    again = run_script("evaluate.py", [run_dir, "--episodes", 5, "--num-envs", 5, "--video-episodes", 0], cwd)
    assert again.returncode == 0, again.stderr
    again_rows = read_rows(f"{folder}_1")
    for row, again_row in zip(rows, again_rows, strict=True):  # CLIP's float sums depend a little on the batch (3 or 5 envs)
        assert float(again_row.pop("clip_return")) == pytest.approx(float(row.pop("clip_return")), rel=1e-5)
        assert again_row == row
    assert len(glob.glob(f"{folder}/*.mp4")) == 2 and not glob.glob(f"{folder}_1/*.mp4")


def test_evaluate_a_chosen_checkpoint_and_bad_input(cartpole_run, tmp_path):
    cwd, run_dir = cartpole_run
    first = sorted(glob.glob(f"{run_dir}/checkpoints/step_*.pt"))[0]
    out = tmp_path / "eval"
    result = run_script("evaluate.py", [run_dir, "--checkpoint", first, "--episodes", 2, "--output-dir", out], cwd)
    assert result.returncode == 0, result.stderr
    assert "(step 200)" in result.stdout and len(read_rows(out)) == 2
    assert_one_line_error(run_script("evaluate.py", [tmp_path], cwd), "no checkpoints/step_*.pt")
    assert_one_line_error(run_script("evaluate.py", [run_dir, "--checkpoint", tmp_path / "nope.pt"], cwd), "no such file")
    assert_one_line_error(run_script("evaluate.py", [run_dir, "--episodes", 0], cwd), "--episodes must be >= 1")
    assert_one_line_error(run_script("evaluate.py", [run_dir, "--num-envs", 1000], cwd), "--num-envs must be <= 256, got 1000")
    (tmp_path / "a-file").write_text("not a folder")
    result = run_script("evaluate.py", [run_dir, "--output-dir", tmp_path / "a-file"], cwd)
    assert_one_line_error(result, f"--output-dir {tmp_path / 'a-file'} is a file, not a folder")
    result = run_script("evaluate.py", [run_dir, "--output-dir", tmp_path / "a-file" / "eval"], cwd)  # under a file
    assert_one_line_error(result, "cannot write there")


def test_evaluate_a_humanoid_run_counts_the_task_predicate(tiny_clip_spec, tmp_path):
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 40, "--num-envs", 2, "--episode-length", 20,
            "--render-size", 48, "--learning-starts", 20, "--batch-size", 16, "--hidden-sizes", 16, 16, "--task", "standing",
            "--render-quality", 256, 0]
    result = run_script("sac_clip_humanoid.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    result = run_script("evaluate.py", [run_dir, "--episodes", 2, "--num-envs", 2, "--video-episodes", 1], tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = glob.glob(f"{run_dir}/eval_step_*")
    rows = read_rows(folder)
    # The humanoid starts standing and an untrained policy makes it fall within 20 steps: the task held for a while.
    fractions = [float(row["task_fraction"]) for row in rows]
    assert all(0 < f < 1 for f in fractions), fractions
    # The ground truth of a pose: the task's score per step, in (0, 1], 1 while the task holds.
    returns = [float(row["ground_truth_return"]) for row in rows]
    assert all(fraction * 20 <= r <= 20 for r, fraction in zip(returns, fractions)), (returns, fractions)
    assert "ground-truth return" in result.stdout and len(glob.glob(f"{folder}/*.mp4")) == 1
    import evaluate  # evaluates in the scene the run trained in, its render quality included

    saved = torch.load(glob.glob(f"{run_dir}/checkpoints/step_*.pt")[0], weights_only=False)["args"]
    quality = evaluate.make_env(saved, "Humanoid").unwrapped.model.vis.quality
    assert (quality.shadowsize, quality.offsamples) == (256, 0)
