"""sac_clip_mountaincar.py: parking at the flag, an end-to-end run with the paper's scene, errors. (The scene: test_clip_envs.py.)"""

import csv
import glob
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from moviepy import VideoFileClip

import clip_envs
import clip_reward
from clip_envs import GOAL_POSITION, FixedLengthMountainCar
from helpers import assert_finite, exit_message, read_scalars, run_script, start_script
from sac_clip_mountaincar import Actor

SCRIPT = "sac_clip_mountaincar.py"
EPISODE_LENGTH = 50


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
    for tag in ["charts/episodic_clip_return", "charts/episodic_return", "charts/success", "charts/SPS",
                "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "losses/ent_coef"]:
        assert_finite(scalars.get(tag))
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 6  # 2 envs x 200 steps / 51 steps each
    assert set(scalars["charts/success"]) <= {0.0, 1.0}
    # The paper's fixed entropy coefficient 0.1 (no tuning); 400 gradient steps at the 200th vector step, logged every 100.
    assert scalars["losses/ent_coef"] == pytest.approx([0.1] * 4) and "losses/ent_coef_loss" not in scalars
    assert len(scalars["losses/qf1_loss"]) == 4
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    for paper_value in ("|alpha|0.5|", "|gamma|0.9999|", "|tau|0.01|", "|policy_lr|0.0001|", "|hidden_sizes|(64, 64)|", "|textured|True|"):
        assert paper_value in hyperparameters
    assert "SPS=" in result.stdout


def test_clip_return_matches_rewards_of_textured_frames(clip_run, tiny_clip_spec):
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    model = clip_reward.load_reward_model(tiny_clip_spec, [clip_envs.PROMPTS["mountaincar"][0]], [clip_envs.PROMPTS["mountaincar"][1]], 0.5, device="cpu")
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    env.reset(seed=0)
    frames = []
    for x in np.linspace(-1.2, 0.6, 60):
        env.unwrapped.state = np.array([x, 0.0])
        frames.append(env.render())
    rewards = model(np.stack(frames)).numpy()
    per_step = np.array(scalars["charts/episodic_clip_return"]) / EPISODE_LENGTH
    margin = 0.1 * (rewards.max() - rewards.min()) + 1e-4
    assert np.all(per_step >= rewards.min() - margin) and np.all(per_step <= rewards.max() + margin), (per_step, rewards)


def test_clip_run_saves_video_and_policy(clip_run):
    cwd, _ = clip_run
    (video, *_) = sorted(glob.glob(os.path.join(cwd, "videos", "*", "*.mp4")))
    clip = VideoFileClip(video)
    assert list(clip.size) == [600, 400]  # gymnasium's frame, not CLIP's input size
    clip.close()
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "sac_clip_mountaincar.cleanrl_model"))
    actor_state, _, _ = torch.load(model_path)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("MountainCarContinuous-v0")])
    actor = Actor(envs, hidden_sizes=(64, 64))  # the paper's 64-64 networks
    actor.load_state_dict(actor_state)
    _, _, mean_action = actor.get_action(torch.zeros(1, 2))
    assert mean_action.shape == (1, 1) and abs(mean_action.item()) <= 1.0


@pytest.mark.parametrize("textured", [True, False])
def test_textured_flag_picks_the_renderer(textured):
    """Both scenes are gymnasium's 600x400 frame; the textured one is the photo-like scene, sky blue at the top."""
    textures = clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES) if textured else None
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", EPISODE_LENGTH, textures)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    top = frame[:30].reshape(-1, 3).mean(0)
    if textured:
        assert top[2] > top[0] + 40
    else:
        assert top.min() > 250  # gymnasium's white background


def test_gymnasium_drawing_still_works_with_no_textured(tiny_clip_spec, tmp_path):
    args = ["--clip-model", tiny_clip_spec, "--no-textured", "--total-timesteps", 120, "--num-envs", 1, "--episode-length", EPISODE_LENGTH,
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
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, monkeypatch, args, message):
    assert message in exit_message(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path, monkeypatch)


def test_updates_per_training_phase_do_not_depend_on_num_envs(tiny_clip_spec, tmp_path):
    """Twice the envs over twice the env steps: the same 200 vector steps, so the same 400 SAC updates."""
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 800, "--num-envs", 4, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 100, "--batch-size", 32]
    result = run_script(SCRIPT, args, tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _, _ = read_scalars(tmp_path)
    assert len(scalars["losses/qf1_loss"]) == 4


def test_centered_rewards_keep_the_critic_near_zero_where_plain_rewards_lift_it_to_their_level(tiny_clip_spec, tmp_path):
    """The same 400 updates with and without --center-rewards: the plain critic's values rise towards the CLIP rewards'
    level (~0.5-0.9 a step, and more with bootstrapping); centred on each batch's mean, they stay near 0. (No entropy
    bonus: it would lift both.)"""
    q_values = {}
    for flags in ([], ["--center-rewards"]):
        cwd = tmp_path / ("centered" if flags else "plain")
        cwd.mkdir()
        args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 400, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
                "--learning-starts", 100, "--batch-size", 32, "--q-lr", 3e-3, "--policy-lr", 3e-3, "--ent-coef", 0, "--no-async-envs", *flags]
        result = run_script(SCRIPT, args, cwd)
        assert result.returncode == 0, result.stderr
        scalars, _, _ = read_scalars(cwd)
        q_values[bool(flags)] = scalars["losses/qf1_values"][-1], np.mean(scalars["charts/episodic_clip_return"]) / EPISODE_LENGTH
    (plain_q, reward_level), (centered_q, _) = q_values[False], q_values[True]
    assert plain_q > 2 * reward_level and abs(centered_q) < 0.2 * reward_level  # measured: 2.2, -0.04 (reward 0.47)


def test_defaults_are_the_papers_setup():
    from sac_clip_mountaincar import Args

    args = Args()
    paper = dict(total_timesteps=3_000_000, episode_length=200, gamma=0.9999, tau=0.01, policy_lr=1e-4, q_lr=1e-4, ent_coef=0.1,
                 autotune=False, center_rewards=False, hidden_sizes=(64, 64), batch_size=256, buffer_size=1_000_000, alpha=0.5, textured=True,
                 prompt=("a car at the peak of the mountain, next to the yellow flag",), baseline_prompt=("a car in the mountain",))
    assert {name: getattr(args, name) for name in paper} == paper


TINY_MOUNTAINCAR_CLIP = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny-mountaincar-clip-for-tests")
# Fast settings for a CPU (not the paper's; bench/sac_tiny_clip_learning.py runs the longer curve): 8 envs, 2 updates per
# vector step, gamma 0.99, learning rates 3e-3, a small fixed entropy coefficient.
FAST_SAC = ["--num-envs", 8, "--learning-starts", 2000, "--train-frequency", 1, "--gradient-steps", 2, "--gamma", 0.99,
            "--policy-lr", 3e-3, "--q-lr", 3e-3, "--ent-coef", 0.01]


def test_sac_reaches_the_flag_from_the_tiny_clip_reward_alone_and_the_opposite_prompt_stays_in_the_valley(tmp_path):
    """24,000 steps per prompt, side by side, with the tiny MountainCar CLIP as the only reward. The goal prompt's final
    policy drives to the flag in every evaluated episode (a random policy: never); "a car at the bottom of the valley",
    same seed and budget, keeps its own CLIP return near its top and never reaches the flag. A script that learned from the env's
    reward, whatever it logs, would reach the flag with both prompts."""
    prompts = {"goal": clip_envs.PROMPTS["mountaincar"][0], "valley": "a car at the bottom of the valley"}
    processes = {}
    for name, prompt in prompts.items():
        (tmp_path / name).mkdir()
        args = ["--clip-model", f"local-dir:{TINY_MOUNTAINCAR_CLIP}", "--prompt", prompt, "--total-timesteps", 24000,
                "--seed", 2, "--checkpoint-frequency", 0, "--no-async-envs", *FAST_SAC]  # in-process envs: the same run, less CPU
        processes[name] = start_script(SCRIPT, args, tmp_path / name)
    results = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
        scalars, _, run_dir = read_scalars(tmp_path / name)
        evaluation = run_script("evaluate.py", [run_dir, "--episodes", 10, "--video-episodes", 0], tmp_path / name)
        assert evaluation.returncode == 0, evaluation.stderr
        with open(glob.glob(os.path.join(run_dir, "eval_step_*", "evaluation.csv"))[0]) as f:
            rows = list(csv.DictReader(f))
        at_flag = np.mean([float(row["task_fraction"]) > 0 for row in rows])  # episodes that reached the flag
        results[name] = scalars, at_flag, np.mean([float(row["ground_truth_return"]) for row in rows])

    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, None)  # a random policy, for comparison
    env.action_space.seed(0)
    random_at_flag = []
    for episode in range(10):
        env.reset(seed=episode)
        positions = [env.step(env.action_space.sample())[0][0] for _ in range(200)]
        random_at_flag.append(max(positions) >= GOAL_POSITION)
    assert np.mean(random_at_flag) <= 0.1

    scalars, at_flag, ground_truth = results["goal"]
    assert np.mean(np.array(scalars["charts/task_fraction"][-16:]) > 0) >= 0.9  # the last training episodes end at the flag
    assert at_flag == 1.0 and ground_truth > 50  # MountainCar's +100 at the flag, minus the action cost
    scalars, at_flag, ground_truth = results["valley"]
    assert max(scalars["charts/task_fraction"][-16:]) == 0.0 and at_flag == 0.0 and ground_truth < 0
    assert min(scalars["charts/episodic_clip_return"][-16:]) > 185  # of at most ~200: the car stays where its prompt points
