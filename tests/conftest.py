"""Shared fixtures: a tiny open_clip model with random weights, saved like real weights."""

import json
import os
import sys

import open_clip
import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
# Headless MuJoCo rendering for the humanoid tests, unless the caller chose a backend.
os.environ.setdefault("MUJOCO_GL", "egl")
# The tests' own tiny models run fastest on one thread, and leave the other core to the scripts they start.
torch.set_num_threads(1)

# Small enough to run hundreds of steps a second on a CPU; same code path as ViT-bigG.
TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_clip(folder, seed=0):
    """Write a random tiny CLIP as open_clip_config.json + weights, loadable as local-dir:folder."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_MODEL_CFG)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": {}}, f)
    torch.save(model.state_dict(), os.path.join(folder, "open_clip_pytorch_model.bin"))
    return model


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    save_tiny_clip(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_clip_spec(tiny_clip_dir):
    return f"local-dir:{tiny_clip_dir}"
