"""Train the tiny CartPole CLIP: a TEST AND DEMO ASSET, never a model to train real agents with.

Real CLIP weights cannot be downloaded on this project's machines, so the tests could only use
random weights. This script renders CartPole frames from random states, captions each frame from
its state ("pole vertically upright on top of the cart", "pole fallen to the left", "cart at the
right edge", ...), and trains a tiny open_clip CLIP on them on the CPU. The result is a folder that
loads like any open_clip model:

    python dqn_clip_cartpole.py --clip-model local-dir:assets/tiny-cartpole-clip-for-tests

Training: each frame is classified against its angle captions and its position captions (the
text tower embeds the captions, so both towers learn), and the baseline prompt "pole and cart"
is pulled to the mean embedding of all frames, so that it means "any frame of this scene" and
d = g - b points from the average frame to the upright pole (goal-baseline regularisation needs
that). Seeded; ~25 minutes on 2 CPU cores.

    python assets/make_tiny_cartpole_clip.py
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import tyro
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clip_reward  # noqa: E402

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
UPRIGHT_DEGREES = 6  # |angle| below this is "upright"
ANGLE_CAPTIONS = [
    "pole vertically upright on top of the cart",
    "pole tilted to the right",
    "pole tilted to the left",
    "pole fallen to the right",
    "pole fallen to the left",
    "pole hanging down below the cart",
]
POSITION_CAPTIONS = ["cart at the left edge", "cart in the middle", "cart at the right edge"]
BASELINE_CAPTION = "pole and cart"


@dataclass
class Args:
    output_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-cartpole-clip-for-tests")
    """where to write open_clip_config.json and the weights"""
    seed: int = 0
    """seed for states, initialisation and batches"""
    num_frames: int = 8000
    """training frames rendered from random states"""
    steps: int = 2500
    """optimiser steps"""
    batch_size: int = 128
    """frames per step"""
    learning_rate: float = 5e-4
    """peak AdamW learning rate (linear warm-up, cosine decay)"""


def angle_label(theta):
    """Index into ANGLE_CAPTIONS; positive angles lean right in gymnasium's drawing."""
    degrees = np.degrees(np.abs(theta))
    right = theta > 0
    return np.select(
        [degrees < UPRIGHT_DEGREES, degrees < 45, degrees < 135],
        [0, np.where(right, 1, 2), np.where(right, 3, 4)],
        default=5,
    )


def position_label(x):
    return np.select([x < -1.2, x > 1.2], [0, 2], default=1)


def random_states(rng, n):
    """Cart positions uniform on the track; half the angles near upright, half uniform on the circle."""
    x = rng.uniform(-2.4, 2.4, n)
    theta = np.where(rng.random(n) < 0.5, rng.normal(0, np.radians(20), n), rng.uniform(-np.pi, np.pi, n))
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    return x, theta


def render_states(x, theta, preprocess, chunk=256):
    """Preprocessed images of CartPole states (gymnasium's own drawing, as in dqn_clip_cartpole.py)."""
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    images = []
    for start in range(0, len(x), chunk):
        frames = []
        for xi, ti in zip(x[start : start + chunk], theta[start : start + chunk]):
            env.unwrapped.state = np.array([xi, 0.0, ti, 0.0])
            frames.append(env.render())
        images.append(preprocess(np.stack(frames)))  # downsized at once: full frames would fill memory
    env.close()
    return torch.cat(images)


def learning_rate_at(step, args):
    warmup = 100
    if step < warmup:
        return args.learning_rate * (step + 1) / warmup
    return args.learning_rate * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    preprocess = clip_reward.FramePreprocessor(model)  # the reward model's own preprocessing

    start = time.time()
    x, theta = random_states(rng, args.num_frames)
    images = render_states(x, theta, preprocess)
    angle_labels = torch.as_tensor(angle_label(theta))
    position_labels = torch.as_tensor(position_label(x))
    test_x, test_theta = random_states(np.random.default_rng(args.seed + 1), 1000)
    test_images = render_states(test_x, test_theta, preprocess)
    print(
        f"rendered {len(images)} + {len(test_images)} frames in {time.time() - start:.0f}s; "
        f"angle classes {np.bincount(angle_labels.numpy(), minlength=6)}"
    )

    angle_tokens = tokenizer(ANGLE_CAPTIONS)
    position_tokens = tokenizer(POSITION_CAPTIONS)
    baseline_tokens = tokenizer([BASELINE_CAPTION])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)

    def losses_and_accuracy(batch_images, batch_angles, batch_positions):
        s = F.normalize(model.encode_image(batch_images), dim=-1)
        scale = model.logit_scale.exp()
        angle_texts = F.normalize(model.encode_text(angle_tokens), dim=-1)
        position_texts = F.normalize(model.encode_text(position_tokens), dim=-1)
        baseline = F.normalize(model.encode_text(baseline_tokens), dim=-1)[0]
        angle_logits = scale * s @ angle_texts.T
        loss = F.cross_entropy(angle_logits, batch_angles)
        loss = loss + F.cross_entropy(scale * s @ position_texts.T, batch_positions)
        loss = loss + (1 - F.cosine_similarity(baseline, s.mean(dim=0), dim=0))
        accuracy = (angle_logits.argmax(dim=1) == batch_angles).float().mean().item()
        return loss, accuracy

    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, args)
        idx = torch.randint(0, len(images), (args.batch_size,))
        loss, accuracy = losses_and_accuracy(images[idx], angle_labels[idx], position_labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            elapsed = time.time() - start
            print(
                f"step {step}/{args.steps} loss {loss.item():.3f} batch angle accuracy {accuracy:.2f} ({elapsed:.0f}s)",
                flush=True,
            )

    model.eval()
    with torch.no_grad():
        _, test_accuracy = losses_and_accuracy(
            test_images, torch.as_tensor(angle_label(test_theta)), torch.as_tensor(position_label(test_x))
        )
    print(f"held-out angle caption accuracy: {test_accuracy:.3f}")

    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "open_clip_config.json"), "w") as f:
        json.dump(
            {"model_cfg": MODEL_CFG, "preprocess_cfg": {}, "note": "tiny CartPole CLIP for tests and demos only"}, f, indent=2
        )
    # fp16 halves the file; the loader casts back to the model's float32.
    state_dict = {name: tensor.half().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state_dict, os.path.join(args.output_dir, "open_clip_model.safetensors"))
    print(f"saved to {args.output_dir} (load with --clip-model local-dir:{args.output_dir})")
