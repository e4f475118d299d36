"""sac_clip_humanoid.py: pose indicators on hand-set poses, an end-to-end run with the paper's scene, errors."""

import glob
import os

import numpy as np
import pytest
import torch
from moviepy import VideoFileClip

import clip_envs
from helpers import assert_finite, assert_one_line_error, read_scalars, run_script
from test_clip_envs import KNEELING, STANDING, set_pose

SCRIPT = "sac_clip_humanoid.py"
EPISODE_LENGTH = 40

# Left knee on the floor, right thigh forward with its foot on the floor.
HALF_KNEELING = dict(torso_height=0.92, joints={"left_knee": -np.pi / 2, "right_hip_y": -np.pi / 2, "right_knee": -np.pi / 2})


def test_pose_indicators_on_standing_and_kneeling_poses():
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=64)
    env.reset(seed=0)
    set_pose(env, **STANDING)
    standing = clip_envs.pose_indicators(env.unwrapped.data)
    assert standing["torso_height"] == pytest.approx(1.4) and standing["head_height"] == pytest.approx(1.59)
    assert standing["kneeling"] == 0.0
    set_pose(env, **KNEELING)
    kneeling = clip_envs.pose_indicators(env.unwrapped.data)
    assert kneeling["torso_height"] == pytest.approx(0.92) and kneeling["kneeling"] == 1.0
    set_pose(env, **HALF_KNEELING)  # one knee down is not kneeling
    half = clip_envs.pose_indicators(env.unwrapped.data)
    assert half["kneeling"] == 0.0 and half["torso_height"] == pytest.approx(0.92)
    assert env.unwrapped.data.body("right_shin").xpos[2] == pytest.approx(0.92 - 0.465, abs=0.03)  # that knee is at hip height
    env.close()


@pytest.fixture(scope="module")
def clip_run(tiny_clip_spec, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sac_humanoid")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 240, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 60, "--batch-size", 32, "--capture-video", "--save-model", "--prompt", "a humanoid robot kneeling"]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_reward_pose_indicators_and_losses(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    for tag in ["charts/episodic_clip_return", "pose/torso_height", "pose/head_height", "pose/kneeling", "charts/SPS",
                "losses/qf1_loss", "losses/actor_loss", "losses/ent_coef"]:
        assert_finite(scalars.get(tag))
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 4  # 2 envs x 120 steps / 41 steps each
    assert all(0.0 < h < 1.6 for h in scalars["pose/torso_height"])
    assert all(0.0 <= k <= 1.0 for k in scalars["pose/kneeling"])
    # The CLIP reward of a unit-norm embedding with alpha 0.5 lies in [-1, 1] per step.
    assert all(abs(r) <= EPISODE_LENGTH for r in scalars["charts/episodic_clip_return"])
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.5|" in hyperparameters and "|camera|(3.5, -10.0, 180.0, 1.0)|" in hyperparameters
    assert "|render_size|480|" in hyperparameters
    assert "torso_height=" in result.stdout and "SPS=" in result.stdout


def test_first_episode_starts_upright_and_falls(clip_run):
    """No early termination: under a random policy the humanoid falls, and the episode goes on."""
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    assert scalars["pose/torso_height"][0] < 1.4  # mean over the episode, below the start height


def test_clip_run_saves_a_480_pixel_video_and_the_policy(clip_run):
    """Videos are recorded at the render size, big enough to judge a pose, not at the tiny CLIP's 32 px."""
    cwd, _ = clip_run
    (video, *_) = sorted(glob.glob(os.path.join(cwd, "videos", "*", "*.mp4")))
    clip = VideoFileClip(video)
    assert list(clip.size) == [480, 480]
    clip.close()
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "sac_clip_humanoid.cleanrl_model"))
    actor_state, qf1_state, _ = torch.load(model_path)
    assert actor_state["fc_mean.weight"].shape == (17, 256)  # Humanoid has 17 actuators
    assert qf1_state["fc1.weight"].shape[1] == 348 + 17


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "1.2"], "alpha must be in [0, 1]"),
        (["--camera", "0", "-10", "90", "0.8"], "--camera takes DISTANCE"),
        (["--camera", "nan", "-10", "90", "0.8"], "--camera takes DISTANCE"),
        (["--prompt", ""], "target prompts must be a non-empty list"),
        (["--no-textured", "--textures-dir", "."], "--textures-dir needs the textured scene"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, args, message):
    result = run_script(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path)
    assert_one_line_error(result, "error:", message)
