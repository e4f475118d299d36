"""clip_reward_landscape.py: the files it writes, the numbers it prints, and known answers with the tiny CartPole CLIP."""

import csv
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import clip_envs
import clip_reward
from conftest import REPO_ROOT
from helpers import assert_one_line_error, run_script

SCRIPT = "clip_reward_landscape.py"
TINY_CARTPOLE_CLIP = os.path.join(REPO_ROOT, "assets", "tiny-cartpole-clip-for-tests")
TINY_MOUNTAINCAR_CLIP = os.path.join(REPO_ROOT, "assets", "tiny-mountaincar-clip-for-tests")
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


@pytest.mark.parametrize(
    "prompt, lowest, highest",
    [(clip_envs.PROMPTS["mountaincar"][0], clip_envs.GOAL_POSITION, 0.6), ("a car at the bottom of the valley", -0.75, -0.3)],
)
def test_tiny_mountaincar_clip_peaks_where_its_prompt_puts_the_car(tmp_path, prompt, lowest, highest):
    """Known answer with the CLIP the project trained on the textured MountainCar scene (assets/make_tiny_mountaincar_clip.py):
    the goal prompt peaks at the flag and rises with the car's height, the opposite prompt peaks in the valley."""
    states, _, rewards, _ = run_landscape("mountaincar", f"local-dir:{TINY_MOUNTAINCAR_CLIP}", tmp_path, 37, "--prompt", prompt)
    height = clip_envs.mountain_height(states)
    for alpha in ALPHAS:
        assert lowest <= states[np.argmax(rewards[alpha])] <= highest, alpha
        correlation = np.corrcoef(rewards[alpha], height)[0, 1]
        assert correlation > 0.8 if highest > 0 else correlation < -0.8, (alpha, correlation)


@pytest.mark.parametrize("env", ["mountaincar", "humanoid"])
def test_save_frames_writes_what_clip_sees(tmp_path, env):
    """--save-frames writes each swept frame after the reward model's own resize (64 px for the tiny
    CartPole CLIP), in RGB order: the textured scenes have a blue sky at the top."""
    frames_dir = tmp_path / "frames"
    states, _, _, _ = run_landscape(env, f"local-dir:{TINY_CARTPOLE_CLIP}", tmp_path, 5, "--save-frames", frames_dir)
    names = sorted(os.listdir(frames_dir))
    assert len(names) == 5 and names[0].startswith(f"{env}_000_")
    pictures = [np.asarray(Image.open(frames_dir / name)) for name in names]
    assert all(picture.shape == (64, 64, 3) for picture in pictures)
    sky = pictures[0][:4].reshape(-1, 3).mean(0).astype(float)
    assert sky[2] > sky[0] + 30
    # The first state's frame, rendered here and resized by the reward model, is the saved picture.
    model = clip_reward.load_reward_model(f"local-dir:{TINY_CARTPOLE_CLIP}", ["a"], ["b"], 0.0, device="cpu")
    if env == "mountaincar":
        scene = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
        scene.reset(seed=0)
        scene.unwrapped.state = np.array([states[0], 0.0])
        expected = model.preprocess.resize(scene.render()[None])[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(pictures[0] - expected).max() <= 1.0
    else:  # the standing humanoid at the start of the sweep, then kneeling: the saved pictures differ
        assert np.abs(pictures[0].astype(float) - pictures[-1]).mean() > 1.0


def test_importing_the_landscape_tool_leaves_mujoco_alone(tmp_path):
    """It imports the environments module, not the training scripts, and picks a GL backend only for --env humanoid."""
    env = {key: value for key, value in os.environ.items() if key != "MUJOCO_GL"}
    env["PYTHONPATH"] = REPO_ROOT
    code = "import os, sys, clip_reward_landscape; print(os.environ.get('MUJOCO_GL'), 'mujoco' in sys.modules, 'dqn_clip_cartpole' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.split() == ["None", "False", "False"], result.stderr


def test_a_second_sweep_never_overwrites_the_first_silently(tiny_clip_spec, tmp_path):
    states, _, rewards, _ = run_landscape("cartpole", tiny_clip_spec, tmp_path, 5)
    before = {name: (tmp_path / name).read_bytes() for name in ("cartpole_landscape.csv", "cartpole_landscape.png")}
    result = run_script(SCRIPT, ["--env", "cartpole", "--clip-model", tiny_clip_spec, "--num-states", 7, "--output-dir", tmp_path], tmp_path)
    assert_one_line_error(result, "cartpole_landscape", "exists from an earlier sweep", "--overwrite")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    states, _, _, _ = run_landscape("cartpole", tiny_clip_spec, tmp_path, 7, "--overwrite")
    assert len(states) == 7
