"""The tiny-CLIP scripts never replace a committed test asset by accident, their loss orders frames as a reward needs, the
humanoid CLIP's kneeling-like states are plausible near misses and its targets sharpen only as --score-scale asks."""

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip_envs
from conftest import REPO_ROOT
from helpers import assert_one_line_error


@pytest.mark.parametrize("env", ["cartpole", "mountaincar", "humanoid", "pendulum"])
def test_making_a_tiny_clip_refuses_to_overwrite_the_committed_model(env, tmp_path):
    weights = os.path.join(REPO_ROOT, "assets", f"tiny-{env}-clip-for-tests", "open_clip_model.safetensors")
    with open(weights, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    script = os.path.join(REPO_ROOT, "assets", f"make_tiny_{env}_clip.py")
    result = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "error:", "already holds a model", "--overwrite")
    with open(weights, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before


def test_the_humanoid_clip_script_refuses_a_sharpness_that_would_reverse_its_reward(tmp_path):
    script = os.path.join(REPO_ROOT, "assets", "make_tiny_humanoid_clip.py")
    result = subprocess.run([sys.executable, script, "--caption-sharpness", "-1", "--output-dir", str(tmp_path / "clip")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert_one_line_error(result, "error:", "--caption-sharpness > 0", "-1")
    assert not os.path.exists(tmp_path / "clip")


def test_a_smaller_score_scale_lowers_near_misses_and_keeps_the_pose_at_one(tmp_path):
    sys.path.insert(0, os.path.join(REPO_ROOT, "assets"))
    import make_tiny_humanoid_clip

    shortfalls = np.array([0.0, 0.05, 0.14, 0.4])
    scores = np.exp(-shortfalls / clip_envs.SCORE_SCALE)
    np.testing.assert_allclose(make_tiny_humanoid_clip.rescaled(scores, clip_envs.SCORE_SCALE), scores)
    np.testing.assert_allclose(make_tiny_humanoid_clip.rescaled(scores, 0.08), np.exp(-shortfalls / 0.08), rtol=1e-6)
    script = os.path.join(REPO_ROOT, "assets", "make_tiny_humanoid_clip.py")
    result = subprocess.run([sys.executable, script, "--score-scale", "0", "--output-dir", str(tmp_path / "clip")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert_one_line_error(result, "error:", "--score-scale > 0", "0")
    assert not os.path.exists(tmp_path / "clip")


def test_each_caption_learns_to_order_the_frames_by_their_weights():
    """The caption -> frame direction of tiny_clip's loss (what the humanoid CLIP's reward reads). Each caption is alone
    in its group, so the frame -> caption direction says nothing: only its frame weights can make one caption's
    similarity rise along the frames and the other's fall."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "assets"))
    import tiny_clip

    torch.manual_seed(0)
    model, tokenizer = tiny_clip.new_model()
    images = torch.rand(8, 3, 64, 64)
    rising, only_caption = torch.exp(torch.arange(8.0))[:, None], torch.ones(8, 1)
    groups = [(["frame weight rising"], only_caption, rising), (["frame weight falling"], only_caption, rising.flip(0))]
    tiny_clip.train(model, tokenizer, images, groups, "a frame", 150, 8, 2e-3, time.time())
    with torch.no_grad():
        s = F.normalize(model.encode_image(images), dim=-1)
        texts = F.normalize(model.encode_text(tokenizer(["frame weight rising", "frame weight falling"])), dim=-1)
        similarity = (s @ texts.T).numpy()
    ranks = np.argsort(np.argsort(similarity, axis=0), axis=0)
    assert np.corrcoef(ranks[:, 0], np.arange(8))[0, 1] > 0.8, similarity
    assert np.corrcoef(ranks[:, 1], np.arange(8))[0, 1] < -0.8, similarity


def test_the_humanoid_clips_kneeling_like_states_are_plausible_and_mostly_near_misses():
    """make_tiny_humanoid_clip.crouch: bodies resting on the floor with nothing inside anything else, with bent knees,
    a few of them kneeling and most not, so the kneeling prompt learns what separates the pose from its near misses."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "assets"))
    import clip_envs
    from assets import humanoid_poses
    import make_tiny_humanoid_clip

    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.reset(seed=0)
    rng, args = np.random.default_rng(0), make_tiny_humanoid_clip.Args()
    kneeling, bent_knees, kept = 0, 0, 0
    while kept < 60:
        if make_tiny_humanoid_clip.crouch(env, rng, args) is None:
            continue
        kept += 1
        data = env.unwrapped.data
        assert humanoid_poses.deepest_penetration(data) <= 0.01
        assert humanoid_poses.lowest_point(env.unwrapped.model, data) <= 0.02
        kneeling += clip_envs.task_success(data)["kneeling"]
        bent_knees += max(data.joint("left_knee").qpos[0], data.joint("right_knee").qpos[0]) < np.radians(-30)
    env.close()
    assert 1 <= kneeling <= 15 and bent_knees >= 40, (kneeling, bent_knees)


def test_a_tiny_clip_for_larger_frames_keeps_its_patch_grid_and_loads_at_that_size(tmp_path):
    """tiny_clip.new_model(128): 16-pixel patches (the same 8 x 8 grid as at 64 px), saved with the config that loads it
    through the reward's own local-dir path at 128 px; the humanoid script refuses a size the grid cannot divide."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "assets"))
    import clip_reward
    import tiny_clip

    assert tiny_clip.model_config() == tiny_clip.MODEL_CFG
    torch.manual_seed(0)
    model, _ = tiny_clip.new_model(128)
    assert tuple(model.visual.image_size) == (128, 128) and tuple(model.visual.patch_size) == (16, 16)
    tiny_clip.save(model, str(tmp_path / "clip128"), "test")
    reward_model = clip_reward.load_reward_model(f"local-dir:{tmp_path / 'clip128'}", ["a"], ["b"], 0.0, device="cpu")
    assert reward_model.model.visual.image_size[0] == 128
    frames = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = F.normalize(model.encode_image(reward_model.preprocess(frames)), dim=-1)
        loaded = F.normalize(reward_model.model.encode_image(reward_model.preprocess(frames)), dim=-1)
    torch.testing.assert_close(loaded, expected, atol=2e-2, rtol=0)  # fp16 weights on disk
    script = os.path.join(REPO_ROOT, "assets", "make_tiny_humanoid_clip.py")
    result = subprocess.run([sys.executable, script, "--render-size", "60", "--output-dir", str(tmp_path / "clip")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert_one_line_error(result, "error:", "--render-size must be a multiple of 8", "60")
    assert not os.path.exists(tmp_path / "clip")


def test_the_pendulum_clips_goal_reward_rises_as_the_pendulum_swings_up():
    """The tiny Pendulum CLIP at 64 px: "pointing straight up" pays most upright and falls towards horizontal; "hanging
    straight down" pays most hanging: the shaped rewards the Pendulum bench learns from (docs/your_own_environment.md)."""
    import clip_reward
    import gymnasium as gym

    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for angle in (0.0, 0.8, 1.6, np.pi):
        env.unwrapped.state, env.unwrapped.last_u = np.array([angle, 0.0]), None
        frames.append(clip_envs.square_frame(env.render(), 64))
    spec = f"local-dir:{REPO_ROOT}/assets/tiny-pendulum-clip-for-tests"
    up, down = (clip_reward.load_reward_model(spec, [clip_envs.ENV_TASKS[task].prompt], ["a pendulum"], 0.0, device="cpu")
                for task in ("pendulum-upright", "pendulum-down"))  # fmt: skip
    up_rewards, down_rewards = up(np.stack(frames)).numpy(), down(np.stack(frames)).numpy()
    assert up_rewards[0] > up_rewards[1] > up_rewards[2] and up_rewards[0] > up_rewards[3] + 0.2, up_rewards
    assert down_rewards[3] == down_rewards.max() and down_rewards[3] > down_rewards[0] + 0.2, down_rewards
