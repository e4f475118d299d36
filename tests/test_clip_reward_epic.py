"""clip_reward_epic.py and the labelled humanoid states: judging a CLIP as a reward model without training."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import clip_envs
from assets import humanoid_poses
from clip_reward_epic import epic_distance
from conftest import REPO_ROOT
from helpers import assert_one_line_error, run_script

SCRIPT = "clip_reward_epic.py"
STATES = os.path.join(REPO_ROOT, "assets", "humanoid-states.npz")
TINY_CARTPOLE_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests"


def read_epic(folder):
    with open(os.path.join(folder, "epic.csv")) as f:
        return list(csv.DictReader(f))


def test_epic_distance_is_the_pearson_distance_of_appendix_a():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(float)
    rewards = 0.3 * labels + rng.normal(0, 0.2, 400)
    # independently: Pearson's rho from its definition, then D = sqrt((1 - rho) / 2)
    centred_r, centred_l = rewards - rewards.mean(), labels - labels.mean()
    rho = (centred_r @ centred_l) / np.sqrt((centred_r @ centred_r) * (centred_l @ centred_l))
    assert epic_distance(rewards, labels) == pytest.approx(np.sqrt((1 - rho) / 2), rel=1e-12)
    assert epic_distance(labels, labels) == pytest.approx(0.0, abs=1e-7)
    assert epic_distance(5 * labels - 2, labels) == pytest.approx(0.0, abs=1e-7)  # blind to scale and offset
    assert epic_distance(-labels, labels) == pytest.approx(1.0)
    assert epic_distance(rng.normal(size=20000), (rng.random(20000) < 0.5)) == pytest.approx(np.sqrt(0.5), abs=0.01)
    assert np.isnan(epic_distance(np.ones(10), labels[:10]))  # a constant reward has no correlation


def test_the_state_set_is_labelled_by_the_predicates_and_plausible():
    """Loaded back into the simulator, each state meets exactly the tasks its labels say; every task has goal states
    and other states; the pose variations rest on the floor with nothing inside anything else."""
    saved = np.load(STATES)
    tasks = list(saved["tasks"])
    assert tasks == list(clip_envs.HUMANOID_TASKS)
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.reset(seed=0)
    for qpos, qvel, labels, origin in zip(saved["qpos"], saved["qvel"], saved["labels"], saved["origin"]):
        env.unwrapped.set_state(qpos, qvel)
        met = clip_envs.task_success(env.unwrapped.data)
        assert [met[task] for task in tasks] == labels.tolist(), origin
        if origin != "random policy":
            assert humanoid_poses.deepest_penetration(env.unwrapped.data) <= 0.01
            assert humanoid_poses.lowest_point(env.unwrapped.model, env.unwrapped.data) <= 0.02
    env.close()
    goal_counts = saved["labels"].sum(axis=0)
    assert goal_counts.min() >= 40 and (len(saved["labels"]) - goal_counts).min() >= 400, dict(zip(tasks, goal_counts))
    for task in tasks:  # each task's own variations: some still meet it, and near misses that do not
        own = saved["labels"][saved["origin"] == f"{task} pose", tasks.index(task)]
        assert 40 <= own.sum() < len(own) or task in ("standing", "arms-raised", "one-leg"), (task, own.sum(), len(own))
    assert (saved["origin"] == "random policy").sum() >= 300


def test_the_seeded_script_writes_the_committed_state_set(tmp_path):
    output = tmp_path / "states.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "assets", "make_humanoid_states.py"), "--output", output],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    committed, again = np.load(STATES), np.load(output)
    for name in ("qpos", "qvel", "labels", "tasks", "origin"):
        np.testing.assert_array_equal(again[name], committed[name])
    refused = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "assets", "make_humanoid_states.py")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr


def test_on_cartpole_the_trained_tiny_clip_is_closer_to_the_labels_than_a_random_clip(tiny_clip_spec, tmp_path):
    args = ["--env", "cartpole", "--clip-model", TINY_CARTPOLE_CLIP, tiny_clip_spec, "--num-states", 200, "--output-dir", tmp_path]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_epic(tmp_path)
    assert len(rows) == 2 * 5 and {row["task"] for row in rows} == {"upright"}
    epic = {(row["model"], float(row["alpha"])): float(row["epic"]) for row in rows}
    for alpha in (0.0, 0.5, 1.0):
        assert epic[TINY_CARTPOLE_CLIP, alpha] < epic[tiny_clip_spec, alpha] - 0.1, epic
        assert epic[tiny_clip_spec, alpha] > 0.6  # a random CLIP is about unrelated to the labels (0.71)
    # the labels are the ground truth of the same uniform states: about 12 of 180 degrees upright
    n_goal = int(rows[0]["n_goal"])
    assert n_goal + int(rows[0]["n_other"]) == 200 and 5 <= n_goal <= 25
    for name in ("epic.png", "reward_histograms.png"):
        assert os.path.getsize(tmp_path / name) > 10_000
    again = run_script(SCRIPT, args, tmp_path)
    assert_one_line_error(again, "epic.csv exists", "--overwrite")


TINY_HUMANOID_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-humanoid-clip-for-tests"


def test_humanoid_scores_every_task_and_alpha_from_one_rendering(tiny_clip_spec, tmp_path):
    """One rendering of 150 of the labelled states, two models: every task and alpha for each, the goal counts the
    labels give, and the tiny humanoid CLIP (trained on other states, assets/make_tiny_humanoid_clip.py) much closer to
    the labels than a random CLIP for the whole-body poses."""
    args = ["--env", "humanoid", "--clip-model", TINY_HUMANOID_CLIP, tiny_clip_spec, "--max-states", 150, "--render-size", 128,
            "--alphas", 0.0, 1.0, "--output-dir", tmp_path]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_epic(tmp_path)
    expected = [(model, t, a) for model in (TINY_HUMANOID_CLIP, tiny_clip_spec) for t in clip_envs.HUMANOID_TASKS for a in (0.0, 1.0)]
    assert [(row["model"], row["task"], float(row["alpha"])) for row in rows] == expected
    saved = np.load(STATES)
    chosen = np.sort(np.random.default_rng(0).choice(len(saved["qpos"]), 150, replace=False))
    for row in rows:
        assert int(row["n_goal"]) == saved["labels"][chosen, list(saved["tasks"]).index(row["task"])].sum()
        assert int(row["n_goal"]) + int(row["n_other"]) == 150
    epic = {(row["model"], row["task"], float(row["alpha"])): float(row["epic"]) for row in rows}
    for task in ("standing", "kneeling"):
        assert epic[TINY_HUMANOID_CLIP, task, 0.0] < epic[tiny_clip_spec, task, 0.0] - 0.1, epic
    assert_one_line_error(run_script(SCRIPT, ["--env", "humanoid", "--tasks", "dancing", "--output-dir", tmp_path / "x"], tmp_path),
                          "--tasks for humanoid are")


def test_on_mountaincar_the_tiny_mountaincar_clip_separates_the_flag(tmp_path):
    args = ["--env", "mountaincar", "--clip-model", f"local-dir:{REPO_ROOT}/assets/tiny-mountaincar-clip-for-tests",
            "--num-states", 100, "--alphas", 0.5, "--output-dir", tmp_path]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = read_epic(tmp_path)
    assert row["task"] == "flag" and 3 <= int(row["n_goal"]) <= 17  # 0.15 of the track lies past the flag
    assert float(row["epic"]) < 0.55, row  # the goal prompt's reward peaks at the flag


def test_a_model_that_fails_to_load_keeps_the_scores_of_those_before_it(tmp_path, monkeypatch):
    """The second model's download fails after the first was scored: its rows are in epic.csv, and the exit says so."""
    import runpy

    import clip_reward

    load_clip, loads = clip_reward.load_clip, []

    def first_loads_then_the_download_fails(spec, **kwargs):
        loads.append(spec)
        if len(loads) > 1:
            raise clip_reward.CLIPRewardError(f"could not download the weights of {spec}")
        return load_clip(spec, **kwargs)

    monkeypatch.setattr(clip_reward, "load_clip", first_loads_then_the_download_fails)
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--env", "cartpole", "--num-states", "80", "--no-cuda", "--alphas", "0", "1",
                                      "--clip-model", TINY_CARTPOLE_CLIP, "ViT-B-32/laion2b_s34b_b79k", "--output-dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO_ROOT, SCRIPT), run_name="__main__")
    assert exit_info.value.code == (f"error: could not download the weights of ViT-B-32/laion2b_s34b_b79k; the scores of "
                                    f"{TINY_CARTPOLE_CLIP} are in {tmp_path / 'epic.csv'}")  # fmt: skip
    rows = read_epic(tmp_path)
    assert [(row["model"], float(row["alpha"])) for row in rows] == [(TINY_CARTPOLE_CLIP, 0.0), (TINY_CARTPOLE_CLIP, 1.0)]
    assert all(0 <= float(row["epic"]) <= 1 and int(row["n_goal"]) + int(row["n_other"]) == 80 for row in rows)
