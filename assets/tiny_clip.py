"""Training a tiny open_clip CLIP on captioned frames: shared by the make_tiny_*_clip.py scripts.

The tiny CLIPs are TEST AND DEMO ASSETS. Real CLIP weights cannot be downloaded on this
project's machines; these let the tests run the whole path frame -> embedding -> reward ->
learning offline, through the same loader as real weights (`--clip-model local-dir:...`).

Each frame is classified against groups of captions (the text tower embeds the captions, so
both towers learn), and the baseline caption is pulled to the mean embedding of all frames, so
that it means "any frame of this scene" and d = g - b points from the average frame to the
goal (goal-baseline regularisation needs that).
"""

import json
import math
import os
import sys
import time

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def model_config(image_size=64):
    """MODEL_CFG for square frames of image_size pixels, its patches scaled alike (8 x 8 patches whatever the size)."""
    vision_cfg = {**MODEL_CFG["vision_cfg"], "image_size": image_size, "patch_size": image_size // 8}
    return {**MODEL_CFG, "vision_cfg": vision_cfg}


def new_model(image_size=64):
    """A randomly initialised tiny CLIP for frames of image_size pixels (uses torch's RNG) and its tokenizer."""
    model = open_clip.CLIP(**model_config(image_size))
    return model, open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])


def check_output_dir(output_dir, overwrite):
    """Refuse to replace an existing model (the committed test assets) unless asked to."""
    if os.path.exists(os.path.join(output_dir, "open_clip_config.json")) and not overwrite:
        sys.exit(f"error: {output_dir} already holds a model: pass --overwrite to replace it, or another --output-dir")


def learning_rate_at(step, steps, peak, warmup=100):
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


def losses_and_accuracy(model, tokenizer, images, caption_groups, baseline_caption):
    """Summed caption cross-entropies plus the baseline term; accuracy of the first group's captions.

    caption_groups: [(captions, targets)], targets class indices (N,) or class probabilities (N, C); or
    [(captions, targets, frame_weights)], frame_weights (N, C) > 0 adding CLIP's other direction, each caption choosing
    among the batch's frames in proportion to their weights, which orders one caption's similarity across frames.
    """
    s = F.normalize(model.encode_image(images), dim=-1)
    scale = model.logit_scale.exp()
    loss, accuracy = 0.0, None
    for captions, targets, *frame_weights in caption_groups:
        texts = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        logits = scale * s @ texts.T
        loss = loss + F.cross_entropy(logits, targets)
        if frame_weights:
            loss = loss + F.cross_entropy(logits.T, (frame_weights[0] / frame_weights[0].sum(dim=0)).T)
        if accuracy is None:
            labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    baseline = F.normalize(model.encode_text(tokenizer([baseline_caption])), dim=-1)[0]
    loss = loss + (1 - F.cosine_similarity(baseline, s.mean(dim=0), dim=0))
    return loss, accuracy


def train(model, tokenizer, images, caption_groups, baseline_caption, steps, batch_size, learning_rate, start_time):
    """AdamW on random batches of (images, targets); caption_groups as in losses_and_accuracy over all images."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, steps, learning_rate)
        idx = torch.randint(0, len(images), (batch_size,))
        batch_groups = [(captions, *(per_frame[idx] for per_frame in rest)) for captions, *rest in caption_groups]
        loss, accuracy = losses_and_accuracy(model, tokenizer, images[idx], batch_groups, baseline_caption)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == steps - 1:
            elapsed = time.time() - start_time
            print(f"step {step}/{steps} loss {loss.item():.3f} batch accuracy {accuracy:.2f} ({elapsed:.0f}s)", flush=True)
    model.eval()


def held_out_accuracy(model, tokenizer, images, caption_groups, baseline_caption):
    with torch.no_grad():
        return losses_and_accuracy(model, tokenizer, images, caption_groups, baseline_caption)[1]


def save(model, output_dir, note):
    """open_clip_config.json + fp16 safetensors: loads with --clip-model local-dir:output_dir."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "open_clip_config.json"), "w") as f:
        model_cfg = model_config(model.visual.image_size[0])
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": {}, "note": note}, f, indent=2)
    # fp16 halves the file; the loader casts back to the model's float32.
    state_dict = {name: tensor.half().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state_dict, os.path.join(output_dir, "open_clip_model.safetensors"))
    print(f"saved to {output_dir} (load with --clip-model local-dir:{output_dir})")
