"""clip_reward_landscape.py: the files it writes, the numbers it prints, and known answers with the tiny CartPole CLIP."""

import csv
import os
import re

import gymnasium as gym
import numpy as np
import pytest

import clip_reward
from conftest import REPO_ROOT
from helpers import assert_one_line_error, run_script

SCRIPT = "clip_reward_landscape.py"
TINY_CARTPOLE_CLIP = os.path.join(REPO_ROOT, "assets", "tiny-cartpole-clip-for-tests")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def run_landscape(env, clip_model, cwd, num_states, *extra):
    result = run_script(SCRIPT, ["--env", env, "--clip-model", clip_model, "--num-states", num_states,
                                 "--output-dir", cwd, *extra], cwd)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(cwd, f"{env}_landscape.csv")) as f:
        rows = list(csv.DictReader(f))
    states = np.array([float(row["state"]) for row in rows])
    ground_truth = np.array([float(row["ground_truth"]) for row in rows])
    rewards = {alpha: np.array([float(row[f"reward_alpha_{alpha}"]) for row in rows]) for alpha in ALPHAS}
    printed = {float(a): (float(p), float(r), float(e))
               for a, p, r, e in re.findall(r"^\s*([\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+([\d.]+)$", result.stdout, re.M)}
    return states, ground_truth, rewards, printed


def test_cartpole_landscape_writes_the_rewards_of_rendered_states(tiny_clip_spec, tmp_path):
    states, ground_truth, rewards, printed = run_landscape("cartpole", tiny_clip_spec, tmp_path, 37)
    np.testing.assert_allclose(states, np.linspace(-180, 180, 37), atol=1e-3)
    np.testing.assert_array_equal(ground_truth, (np.abs(states) <= 12).astype(float))
    # The same frames through the reward model in this process give the same rewards.
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for angle in np.radians(states[::6]):
        env.unwrapped.state = np.array([0.0, 0.0, angle, 0.0])
        frames.append(env.render())
    model = clip_reward.load_reward_model(
        tiny_clip_spec, ["pole vertically upright on top of the cart"], ["pole and cart"], 1.0, device="cpu")
    embeddings = model.embed_images(np.stack(frames))
    for alpha in ALPHAS:
        np.testing.assert_allclose(rewards[alpha][::6], model.rewards_from_embeddings(embeddings, alpha).numpy(), atol=1e-5)
    # The printed table agrees with the CSV: peak, Pearson rho, EPIC = sqrt((1 - rho) / 2).
    assert sorted(printed) == list(ALPHAS)
    for alpha, (peak, rho, epic) in printed.items():
        assert peak == pytest.approx(states[np.argmax(rewards[alpha])], abs=1e-3)
        assert rho == pytest.approx(np.corrcoef(rewards[alpha], ground_truth)[0, 1], abs=1e-3)
        assert epic == pytest.approx(np.sqrt((1 - rho) / 2), abs=1e-3)
    import matplotlib.image
    assert matplotlib.image.imread(os.path.join(tmp_path, "cartpole_landscape.png")).shape[2] in (3, 4)


@pytest.mark.parametrize("env, first, last, goal_truth", [("mountaincar", -1.2, 0.6, "at_flag"), ("humanoid", 0.0, 1.0, "blend")])
def test_other_landscapes_sweep_their_goal_variable(tiny_clip_spec, tmp_path, env, first, last, goal_truth):
    states, ground_truth, rewards, printed = run_landscape(env, tiny_clip_spec, tmp_path, 11)
    np.testing.assert_allclose(states, np.linspace(first, last, 11), atol=1e-4)
    expected = (states >= 0.45).astype(float) if goal_truth == "at_flag" else states
    np.testing.assert_allclose(ground_truth, expected, atol=1e-4)
    assert all(np.all(np.isfinite(r)) and np.ptp(r) > 0 for r in rewards.values())  # frames differ, so rewards do
    assert sorted(printed) == list(ALPHAS)


@pytest.mark.parametrize("args, message", [(["--alphas", "0", "1.5"], "alpha must be in [0, 1]"),
                                           (["--num-states", "1"], "--num-states must be >= 2")])
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, args, message):
    result = run_script(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path)
    assert_one_line_error(result, "error:", message)


def test_tiny_cartpole_clip_peaks_at_the_upright_pole_for_every_alpha(tmp_path):
    """Known answer with the CLIP the project trained on CartPole frames (assets/make_tiny_cartpole_clip.py)."""
    states, ground_truth, rewards, printed = run_landscape("cartpole", f"local-dir:{TINY_CARTPOLE_CLIP}", tmp_path, 121)
    for alpha in ALPHAS:
        peak = states[np.argmax(rewards[alpha])]
        assert abs(peak) <= 6, (alpha, peak)  # within a few degrees of upright; regularisation does not move it away
        assert np.corrcoef(rewards[alpha], ground_truth)[0, 1] > 0.3, alpha
