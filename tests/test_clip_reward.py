"""Known answers for the VLM-RM reward, the loading path, and every promised error."""

import json
import math
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip_reward
from clip_reward import CLIPRewardError, goal_baseline_reward, goal_direction_components, projection_matrix
from conftest import TINY_MODEL_CFG, save_tiny_clip

DIM = 16


def unit(v):
    return v / v.norm()


@pytest.fixture
def vectors():
    generator = torch.Generator().manual_seed(0)
    target = unit(torch.randn(DIM, generator=generator))
    baseline = unit(torch.randn(DIM, generator=generator))
    states = F.normalize(torch.randn(64, DIM, generator=generator), dim=-1)
    return target, baseline, states


@pytest.fixture(scope="module")
def reward_model(tiny_clip_spec):
    return clip_reward.load_reward_model(
        tiny_clip_spec, ["pole vertically upright on top of the cart"], ["pole and cart"], alpha=0.5, device="cpu"
    )


def random_frames(n, height=40, width=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


# ---- the math -------------------------------------------------------------------------


def test_alpha_zero_is_cosine_similarity(vectors):
    target, baseline, states = vectors
    rewards = goal_baseline_reward(states, target, projection_matrix(target, baseline, 0.0))
    torch.testing.assert_close(rewards, states @ target)


def test_alpha_one_depends_only_on_the_component_along_d(vectors):
    target, baseline, states = vectors
    direction = unit(target - baseline)
    projection = projection_matrix(target, baseline, 1.0)
    rewards = goal_baseline_reward(states, target, projection)
    # Closed form: only (s - g).d counts.
    torch.testing.assert_close(rewards, 1 - 0.5 * ((states - target) @ direction) ** 2)
    # Moving s perpendicular to d leaves the reward unchanged ...
    noise = torch.randn_like(states)
    perpendicular = noise - (noise @ direction)[:, None] * direction
    torch.testing.assert_close(goal_baseline_reward(states + perpendicular, target, projection), rewards)
    # ... moving it along d does not.
    moved = goal_baseline_reward(states + 0.3 * direction, target, projection)
    assert (moved - rewards).abs().min() > 1e-4


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_projection_is_symmetric_with_the_promised_eigenvalues(vectors, alpha):
    target, baseline, _ = vectors
    projection = projection_matrix(target, baseline, alpha)
    torch.testing.assert_close(projection, projection.T)
    eigenvalues = torch.linalg.eigvalsh(projection)
    expected = torch.tensor([1.0 - alpha] * (DIM - 1) + [1.0]).sort().values
    torch.testing.assert_close(eigenvalues, expected, atol=1e-5, rtol=0)
    direction = target - baseline
    torch.testing.assert_close(projection @ direction, direction)  # d is kept whole


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_reward_is_one_at_the_goal_and_falls_away_from_it(vectors, alpha):
    target, baseline, _ = vectors
    projection = projection_matrix(target, baseline, alpha)
    assert goal_baseline_reward(target[None], target, projection).item() == pytest.approx(1.0)
    # Walk from g towards -d (towards the baseline side): the reward must fall at every step.
    away = unit(baseline - target)
    states = F.normalize(torch.stack([target + t * away for t in np.linspace(0, 1.5, 8)]), dim=-1)
    rewards = goal_baseline_reward(states, target, projection)
    assert torch.all(rewards[1:] < rewards[:-1]), rewards


def test_direction_components_are_what_the_projection_keeps_and_scales(vectors):
    target, baseline, states = vectors
    along, off = goal_direction_components(states, target, baseline)
    direction = unit(target - baseline)
    torch.testing.assert_close(along, states @ direction)
    torch.testing.assert_close(along**2 + off**2, torch.ones(len(states)))  # s is unit length: the two parts are all of it
    for alpha in (0.0, 0.5, 1.0):  # P s = along * d/|d| + (1 - alpha) * (the rest)
        projected = states @ projection_matrix(target, baseline, alpha)
        torch.testing.assert_close((projected @ direction), along)
        torch.testing.assert_close((projected - along[:, None] * direction).norm(dim=-1), (1 - alpha) * off)
    # a state on the goal side of the baseline has a larger component along d than one on the baseline side
    along_goal_side, _ = goal_direction_components(torch.stack([target, baseline]), target, baseline)
    assert along_goal_side[0] > along_goal_side[1]
    _, off_on_d = goal_direction_components(direction[None], target, baseline)
    assert off_on_d.item() == pytest.approx(0.0, abs=1e-6)


# ---- the reward model on a (tiny) open_clip model ---------------------------------------


def test_reward_model_alpha_zero_equals_cosine_of_embeddings(tiny_clip_spec):
    model = clip_reward.load_reward_model(tiny_clip_spec, ["a cart"], ["a pole"], alpha=0.0, device="cpu")
    frames = random_frames(6)
    embeddings = model.embed_images(frames)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(model(frames), embeddings @ model.target)


def test_several_prompts_are_normalised_then_averaged(tiny_clip_spec):
    prompts = ["a pole upright", "a balanced pole on a cart", "vertical pole"]
    model = clip_reward.load_reward_model(tiny_clip_spec, prompts, ["pole and cart"], alpha=0.5, device="cpu")
    singles = [model.embed_prompts([p]) for p in prompts]
    for single in singles:
        assert single.norm().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(model.target, torch.stack(singles).mean(dim=0))
    torch.testing.assert_close(model.direction, model.target - model.baseline)
    torch.testing.assert_close(model.projection, projection_matrix(model.target, model.baseline, 0.5))


def test_batches_give_the_same_rewards_as_one_pass(reward_model):
    frames = random_frames(10)
    all_at_once = reward_model(frames)
    reward_model.batch_size = 3
    try:
        torch.testing.assert_close(reward_model(frames), all_at_once)
    finally:
        reward_model.batch_size = 64
    assert all_at_once.shape == (10,) and all_at_once.dtype == torch.float32


def test_rewards_for_another_alpha_reuse_the_embeddings(tiny_clip_spec, reward_model):
    frames = random_frames(5)
    embeddings = reward_model.embed_images(frames)
    other = clip_reward.load_reward_model(
        tiny_clip_spec, ["pole vertically upright on top of the cart"], ["pole and cart"], alpha=1.0, device="cpu"
    )
    torch.testing.assert_close(reward_model.rewards_from_embeddings(embeddings, alpha=1.0), other(frames))
    torch.testing.assert_close(reward_model.rewards_from_embeddings(embeddings), reward_model(frames))


def test_preprocessing_uses_the_models_own_constants(tmp_path):
    mean, std = [0.25, 0.5, 0.75], [0.1, 0.2, 0.4]
    folder = tmp_path / "custom"
    save_tiny_clip(str(folder))
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"] = {"mean": mean, "std": std}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    model = clip_reward.load_reward_model(f"local-dir:{folder}", ["a"], ["b"], alpha=0.0, device="cpu")
    frames = np.full((2, 90, 120, 3), 51, dtype=np.uint8)  # 51 / 255 = 0.2 everywhere
    images = model.preprocess(frames)
    assert images.shape == (2, 3, 32, 32)  # the tiny model's image_size, from its config
    expected = (0.2 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(images[:, :, 5, 7], expected.expand(2, 3), atol=1e-5, rtol=0)


def test_preprocessing_matches_open_clips_own_transform_channel_by_channel(reward_model):
    """A coloured scene through our batched tensor preprocessing and through open_clip's PIL transform (the
    reference for what CLIP was trained on) gives the same normalised image, in RGB order. A square frame, so
    that open_clip's centre crop crops nothing."""
    frame = np.zeros((240, 240, 3), dtype=np.uint8)
    frame[:120] = (70, 130, 230)  # blue sky
    frame[120:] = (40, 160, 60)  # green hill
    frame[100:180, 60:180] = (220, 30, 30)  # a red car
    transform = open_clip.image_transform(
        reward_model.image_size, is_train=False, mean=reward_model.preprocess.mean.flatten().tolist(),
        std=reward_model.preprocess.std.flatten().tolist(), interpolation="bicubic"
    )  # fmt: skip
    reference = transform(Image.fromarray(frame))
    ours = reward_model.preprocess(frame[None])[0]
    error = (ours - reference).abs().mean().item()
    assert error < 0.03, error  # PIL's and torch's antialiased bicubic differ slightly at edges
    bgr = reward_model.preprocess(np.ascontiguousarray(frame[None, ..., ::-1]))[0]
    assert (bgr - reference).abs().mean().item() > 20 * error  # swapped colours are far off


def test_whole_frame_reaches_clip_without_a_centre_crop(reward_model):
    # A white stripe at the right edge of a wide frame must survive preprocessing.
    frames = np.zeros((1, 40, 120, 3), dtype=np.uint8)
    frames[:, :, -8:] = 255
    images = reward_model.preprocess(frames) * reward_model.preprocess.std + reward_model.preprocess.mean
    assert images[0, :, :, -1].mean() > 0.9 and images[0, :, :, 0].mean() < 0.05


# ---- loading through the same path as real weights ---------------------------------------


def test_flipped_and_read_only_frames_give_the_rewards_of_their_copies(reward_model):
    """A frame flipped with [:, ::-1] (negative strides) or a read-only array is scored, not refused."""
    frames = random_frames(3)
    flipped = frames[:, :, ::-1]
    expected = reward_model(np.ascontiguousarray(flipped))
    torch.testing.assert_close(reward_model(flipped), expected)
    read_only = frames.copy()
    read_only.flags.writeable = False
    torch.testing.assert_close(reward_model(read_only), reward_model(frames.copy()))
    assert not torch.allclose(expected, reward_model(frames))  # the flip changed the picture, so the rewards


def test_checkpoint_file_loads_the_saved_weights(tmp_path):
    original = save_tiny_clip(str(tmp_path / "weights"), seed=7).eval()
    config_file = tmp_path / "tiny-test-clip.json"
    config_file.write_text(json.dumps(TINY_MODEL_CFG))
    open_clip.add_model_config(str(config_file))  # makes "tiny-test-clip" an architecture name
    checkpoint = str(tmp_path / "weights" / "open_clip_pytorch_model.bin")

    from_file, _ = clip_reward.load_clip("tiny-test-clip", checkpoint=checkpoint)
    from_folder, _ = clip_reward.load_clip(f"local-dir:{tmp_path / 'weights'}")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = original.encode_image(images)
        torch.testing.assert_close(from_file.encode_image(images), expected)
        torch.testing.assert_close(from_folder.encode_image(images), expected)
    assert not from_file.training


# ---- bad input: clear errors ---------------------------------------------------------------


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_alpha_outside_unit_interval(tiny_clip_spec, alpha):
    with pytest.raises(CLIPRewardError, match=r"alpha must be in \[0, 1\]"):
        clip_reward.load_reward_model(tiny_clip_spec, ["a"], ["b"], alpha=alpha, device="cpu")


@pytest.mark.parametrize("target, baseline, side", [([], ["b"], "target"), (["a"], [], "baseline"), (["a"], [" "], "baseline")])
def test_empty_prompts(tiny_clip_spec, target, baseline, side):
    with pytest.raises(CLIPRewardError, match=f"{side}_prompts must be a string or a non-empty list of non-empty strings"):
        clip_reward.load_reward_model(tiny_clip_spec, target, baseline, alpha=0.5, device="cpu")


def test_target_equal_to_baseline(tiny_clip_spec):
    with pytest.raises(CLIPRewardError, match="same embedding"):
        clip_reward.load_reward_model(tiny_clip_spec, ["a cart"], ["a cart"], alpha=0.5, device="cpu")


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((8, 8, 3), dtype=np.uint8), r"shape \(N, H, W, 3\).*frame\[None\]"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), r"shape \(N, H, W, 3\)"),
        ([[0, 1]], "numpy array or torch tensor"),
    ],
)
def test_bad_frames(reward_model, frames, message):
    with pytest.raises(CLIPRewardError, match=message):
        reward_model(frames)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(CLIPRewardError, match="unknown CLIP architecture 'ViT-B-33'.*ViT-B-32"):
        clip_reward.load_clip("ViT-B-33/laion2b_s34b_b79k")


def test_unknown_pretrained_tag_lists_valid_tags():
    with pytest.raises(CLIPRewardError, match="unknown pretrained tag 'laion9b' for ViT-B-32; valid tags: .*laion2b_s34b_b79k"):
        clip_reward.load_clip("ViT-B-32/laion9b")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CLIPRewardError, match="checkpoint file not found"):
        clip_reward.load_clip("ViT-B-32", checkpoint=str(tmp_path / "nope.bin"))


def test_wrong_or_corrupt_checkpoint_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_text("not weights")
    config_file = tmp_path / "tiny-test-clip-wide.json"
    config_file.write_text(json.dumps({**TINY_MODEL_CFG, "embed_dim": 48}))  # other shapes than the saved weights
    open_clip.add_model_config(str(config_file))
    save_tiny_clip(str(tmp_path / "tiny"))
    mismatched = str(tmp_path / "tiny" / "open_clip_pytorch_model.bin")
    for architecture, checkpoint in [("tiny-test-clip-wide", str(corrupt)), ("tiny-test-clip-wide", mismatched)]:
        with pytest.raises(CLIPRewardError, match=f"could not load {checkpoint} as tiny-test-clip-wide weights: .+"):
            clip_reward.load_clip(architecture, checkpoint=checkpoint)


def test_failed_download_says_where_and_how_to_go_offline(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network, no retries
    with pytest.raises(CLIPRewardError) as error:
        clip_reward.load_clip("ViT-B-32/laion2b_s34b_b79k", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "could not download" in message and str(tmp_path) in message
    assert "--clip-checkpoint" in message


def test_half_precision_rewards_are_within_0_02_of_float32(tmp_path):
    """The GPU default holds CLIP's weights in half precision; on a CPU the same path runs in bfloat16. On CartPole
    frames, with the tiny CartPole CLIP, rewards stay within 0.02 of float32 (reward spread ~0.4) and keep their order."""
    from test_dqn_clip_cartpole import random_policy_rollouts

    spec = f"local-dir:{os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets', 'tiny-cartpole-clip-for-tests')}"
    _, frames = random_policy_rollouts(1, 100, render=True)
    for alpha in (0.0, 0.5):
        full, half = (
            clip_reward.load_reward_model(spec, ["pole vertically upright on top of the cart"], ["pole and cart"], alpha,
                                          device="cpu", precision=precision)
            for precision in ("fp32", "bf16")
        )
        assert {p.dtype for p in full.model.parameters()} == {torch.float32}
        half_bytes = sum(p.numel() * p.element_size() for p in half.model.visual.parameters())  # the image tower: ~all of bigG
        assert half_bytes < 0.6 * sum(p.numel() * p.element_size() for p in full.model.visual.parameters())
        expected, rewards = full(frames).numpy(), half(frames).numpy()
        assert np.abs(rewards - expected).max() < 0.02 and expected.std() > 0.2
        assert np.corrcoef(rewards, expected)[0, 1] > 0.999
    with pytest.raises(CLIPRewardError, match="precision must be one of"):
        clip_reward.load_clip(spec, precision="int8")
