"""sac_clip_mountaincar.py: the textured renderer, parking at the flag, an end-to-end run, errors."""

import glob
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import clip_reward
from helpers import assert_finite, assert_one_line_error, read_scalars, run_script
from sac_clip_mountaincar import GOAL_POSITION, Actor, FixedLengthMountainCar, TexturedMountainCarRenderer, make_env, mountain_height

SCRIPT = "sac_clip_mountaincar.py"
EPISODE_LENGTH = 50


def car_mask(renderer, frame):
    return np.abs(frame.astype(np.float32) - renderer.background).sum(axis=-1) > 30


@pytest.mark.parametrize("size", [32, 224])
def test_textured_scene_has_the_right_size_and_is_not_blank(size):
    frame = TexturedMountainCarRenderer(size).render(-0.5)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    assert frame.std() > 20  # a scene, not a flat colour
    # Sky above (blue dominates), ground below (red >= blue).
    top, bottom = frame[: size // 10].reshape(-1, 3).mean(0), frame[-size // 10 :].reshape(-1, 3).mean(0)
    assert top[2] > top[0] + 50 and bottom[0] >= bottom[2]


def test_the_car_moves_right_in_the_image_as_x_grows():
    renderer = TexturedMountainCarRenderer(224)
    columns, rows = [], []
    for x in np.linspace(-1.2, 0.6, 10):
        mask = car_mask(renderer, renderer.render(x))
        assert 100 < mask.sum() < 2000  # a car-sized blob
        ys, xs = np.nonzero(mask)
        columns.append(xs.mean())
        rows.append(ys.mean())
        expected_row, expected_col = renderer.pixel_of(x, mountain_height(x))
        assert abs(xs.mean() - expected_col) < 8 and expected_row - 25 < ys.mean() < expected_row  # on the track
    assert np.all(np.diff(columns) > 10)
    # The car at the flag is higher in the image than in the valley.
    assert rows[-2] < rows[3]


def test_the_flag_is_drawn_yellow_at_the_goal():
    renderer = TexturedMountainCarRenderer(224)
    frame = renderer.render(-0.5)
    yellow = (frame[..., 0] > 200) & (frame[..., 1] > 170) & (frame[..., 2] < 80)
    ys, xs = np.nonzero(yellow)
    assert yellow.sum() > 50
    goal_row, goal_col = renderer.pixel_of(GOAL_POSITION, mountain_height(GOAL_POSITION))
    assert goal_col - 2 < xs.mean() < goal_col + 20 and ys.max() < goal_row  # beside the pole, above the ground


def test_reaching_the_flag_parks_the_car_and_the_episode_runs_on():
    env = FixedLengthMountainCar(gym.make("MountainCarContinuous-v0", max_episode_steps=EPISODE_LENGTH))
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.44, 0.06])
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0]))
    assert obs[0] >= GOAL_POSITION and obs[1] == 0.0 and not terminated
    assert reward == pytest.approx(100 - 0.1)  # the goal bonus minus the action cost
    for _ in range(5):
        next_obs, reward, terminated, truncated, _ = env.step(np.array([-1.0]))
        np.testing.assert_array_equal(next_obs, obs)
        assert reward == 0.0 and not terminated and not truncated


@pytest.fixture(scope="module")
def clip_run(tiny_clip_spec, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sac_mountaincar")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 400, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 100, "--batch-size", 32, "--capture-video", "--save-model"]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_and_ground_truth_scalars(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    for tag in ["charts/episodic_clip_return", "charts/episodic_ground_truth_return", "charts/success_rate", "charts/SPS",
                "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "losses/ent_coef", "losses/ent_coef_loss"]:
        assert_finite(scalars.get(tag))
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 6  # 2 envs x 200 steps / 51 steps each
    assert set(scalars["charts/success_rate"]) <= {0.0, 1.0}
    assert all(value > 0 for value in scalars["losses/ent_coef"])
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.5|" in hyperparameters and "|ent_coef|0.2|" in hyperparameters and "|textured|True|" in hyperparameters
    assert "SPS=" in result.stdout


def test_clip_return_matches_rewards_of_textured_frames(clip_run, tiny_clip_spec):
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    model = clip_reward.load_reward_model(
        tiny_clip_spec, ["a car at the peak of the mountain, next to the yellow flag"], ["a car in the mountain"], 0.5, device="cpu"
    )
    renderer = TexturedMountainCarRenderer(model.image_size[0])
    rewards = model(np.stack([renderer.render(x) for x in np.linspace(-1.2, 0.6, 60)])).numpy()
    per_step = np.array(scalars["charts/episodic_clip_return"]) / EPISODE_LENGTH
    margin = 0.1 * (rewards.max() - rewards.min()) + 1e-4
    assert np.all(per_step >= rewards.min() - margin) and np.all(per_step <= rewards.max() + margin), (per_step, rewards)


def test_clip_run_saves_video_and_policy(clip_run):
    cwd, _ = clip_run
    assert glob.glob(os.path.join(cwd, "videos", "*", "*.mp4"))
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "sac_clip_mountaincar.cleanrl_model"))
    actor_state, _, _ = torch.load(model_path)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("MountainCarContinuous-v0")])
    actor = Actor(envs)
    actor.load_state_dict(actor_state)
    _, _, mean_action = actor.get_action(torch.zeros(1, 2))
    assert mean_action.shape == (1, 1) and abs(mean_action.item()) <= 1.0


@pytest.mark.parametrize("textured, shape", [(True, (64, 64, 3)), (False, (400, 600, 3))])
def test_textured_flag_picks_the_renderer(textured, shape):
    env = make_env("MountainCarContinuous-v0", 0, 0, False, "test", EPISODE_LENGTH, textured, 64)()
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == shape and frame.dtype == np.uint8
    if textured:  # the very frame the textured renderer draws for the car's state
        np.testing.assert_array_equal(frame, TexturedMountainCarRenderer(64).render(float(env.unwrapped.state[0])))


def test_gymnasium_drawing_still_works_with_no_textured(tiny_clip_spec, tmp_path):
    args = ["--clip-model", tiny_clip_spec, "--no-textured", "--total-timesteps", 120, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 60, "--batch-size", 16]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, events, _ = read_scalars(tmp_path)
    assert_finite(scalars["charts/episodic_clip_return"])
    assert "|textured|False|" in events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "2"], "alpha must be in [0, 1]"),
        (["--ent-coef", "-1"], "--ent-coef must be >= 0"),
        (["--episode-length", "0"], "--episode-length must be >= 1"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, args, message):
    result = run_script(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path)
    assert_one_line_error(result, "error:", message)
