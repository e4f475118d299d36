"""CLIP as a zero-shot reward model (VLM-RM, Rocamonde et al., ICLR 2024).

The whole method in one module:

    s = normalise(CLIP_image(frame))           # the rendered state
    g = mean(normalise(CLIP_text(t)) for t in target prompts)
    b = mean(normalise(CLIP_text(t)) for t in baseline prompts)
    d = g - b
    P = alpha * d d^T / |d|^2 + (1 - alpha) * I
    R = 1 - 1/2 * |P (s - g)|^2

alpha = 0 gives the plain cosine reward s.g; alpha = 1 keeps only the component of
s along the baseline -> goal direction d ("goal-baseline regularisation").

Usage:
    reward_model = load_reward_model("ViT-B-32/laion2b_s34b_b79k",
                                     target_prompts=["a humanoid robot kneeling"],
                                     baseline_prompts=["a humanoid robot"], alpha=0.5)
    rewards = reward_model(frames)   # frames: uint8 array (N, H, W, 3) -> float tensor (N,)
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import logging
import numbers
import os
import socket
import urllib.parse
from typing import Sequence, Union

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"
FrameBatch = Union[np.ndarray, torch.Tensor]


class CLIPRewardError(ValueError):
    """Bad input to the reward model; the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------
# The math: projection and reward (pure functions of embeddings)
# --------------------------------------------------------------------------------------


def projection_matrix(target: torch.Tensor, baseline: torch.Tensor, alpha: float) -> torch.Tensor:
    """P = alpha * d d^T / |d|^2 + (1 - alpha) * I with d = target - baseline."""
    check_alpha(alpha)
    direction = target - baseline
    squared_norm = direction.dot(direction)
    if alpha > 0 and squared_norm < 1e-12:
        raise CLIPRewardError(
            "target and baseline prompts have the same embedding (d = g - b = 0), so the "
            "goal-baseline direction is undefined: use a different --baseline-prompt or --alpha 0"
        )
    identity = torch.eye(direction.numel(), dtype=direction.dtype, device=direction.device)
    if alpha == 0:
        return identity
    return alpha * torch.outer(direction, direction) / squared_norm + (1 - alpha) * identity


def goal_baseline_reward(image_embeddings: torch.Tensor, target: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """R = 1 - 1/2 |P (s - g)|^2 for each row s of image_embeddings (N, D) -> (N,)."""
    # P is symmetric, so (s - g) P is P (s - g) written for a batch of row vectors.
    projected = (image_embeddings - target) @ projection
    return 1 - 0.5 * projected.pow(2).sum(dim=-1)


def goal_direction_components(
    image_embeddings: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(along, off) for each row s of image_embeddings (N, D): along = s·d/|d|, s's component along the baseline -> goal
    direction d = g - b, and off = |s - (s·d/|d|) d/|d||, the size of the rest. P keeps the first and scales the
    second by (1 - alpha), so alpha = 1 removes it from the reward."""
    unit = (target - baseline) / (target - baseline).norm()
    along = image_embeddings @ unit
    off = (image_embeddings - along[:, None] * unit).norm(dim=-1)
    return along, off


def check_alpha(alpha: float) -> None:
    """Raise CLIPRewardError unless 0 <= alpha <= 1."""
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:  # also rejects NaN
        got = (
            f"{alpha!r} (a {type(alpha).__name__})"
            if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool)
            else alpha
        )
        raise CLIPRewardError(f"alpha must be in [0, 1] (0: plain cosine reward, 1: full projection), got {got}")


def check_prompts(prompts: str | Sequence[str], name: str = "prompts") -> list[str]:
    """The prompts as a list; CLIPRewardError naming them (`name`) unless they are a string or a non-empty list of
    non-blank strings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise CLIPRewardError(f"{name} must be a string or a non-empty list of non-empty strings, got {prompts!r}")
    return list(prompts)


# --------------------------------------------------------------------------------------
# The reward model
# --------------------------------------------------------------------------------------


class FramePreprocessor(torch.nn.Module):
    """uint8 frames (N, H, W, 3) -> normalised float images (N, 3, S, S) on the model's device,
    with the model's own preprocessing constants (size, mean, std, interpolation).

    The whole frame is resized to the model's input size (no centre crop): a crop would cut
    the cart, the flag or a limb at the frame's edge out of CLIP's view.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        size = preprocess_cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation = preprocess_cfg.get("interpolation", "bicubic")
        device = next(model.parameters()).device
        # A model built without the factory has no constants; open_clip's factory defaults then apply.
        mean = preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1))

    def resize(self, frames: FrameBatch) -> torch.Tensor:
        """uint8 frames (N, H, W, 3) -> the pictures CLIP sees: float (N, 3, S, S) in [0, 1], before normalisation."""
        return resize_frames(frames, self.image_size, self.interpolation, self.mean.device)

    def forward(self, frames: FrameBatch) -> torch.Tensor:
        return (self.resize(frames) - self.mean) / self.std


def resize_frames(frames: FrameBatch, size: tuple[int, int], interpolation: str = "bicubic", device=None) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> float images (N, 3, *size) in [0, 1]: the whole frame resized, as the authors did."""
    frames = _check_frames(frames)
    if isinstance(frames, np.ndarray) and not (frames.flags.c_contiguous and frames.flags.writeable):
        frames = np.array(frames)  # torch refuses negative strides (a flipped frame) and warns on read-only arrays
    frames = torch.as_tensor(frames).to(device or "cpu", non_blocking=True)
    images = frames.permute(0, 3, 1, 2).float().div_(255)
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=tuple(size), mode=interpolation, antialias=True)
        images = images.clamp_(0, 1)  # bicubic overshoots at sharp edges
    return images


def _check_frames(frames: FrameBatch) -> FrameBatch:
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        raise CLIPRewardError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype not in (np.uint8, torch.uint8):
        raise CLIPRewardError(f"frames must be uint8 RGB images (N, H, W, 3), got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        hint = " (one frame? pass frame[None])" if frames.ndim == 3 else ""
        raise CLIPRewardError(f"frames must have shape (N, H, W, 3), got {tuple(frames.shape)}{hint}")
    return frames


def _token_count(tokenizer, prompt: str) -> int | None:
    """Tokens the prompt takes in CLIP's text context, start and end tokens included (None: unknown tokenizer)."""
    if isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        return len(tokenizer.encode(prompt)) + 2
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        return len(tokenizer.tokenizer(prompt)["input_ids"])
    return None


class CLIPReward(torch.nn.Module):
    """Maps a batch of rendered frames (uint8, N x H x W x 3) to VLM-RM rewards.

    Holds the goal embedding g, the baseline b, the direction d = g - b and the
    projection P as buffers, so `.to(device)` moves them with the CLIP model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        target_prompts: Sequence[str],
        baseline_prompts: Sequence[str],
        alpha: float,
        batch_size: int = 64,
    ):
        super().__init__()
        check_alpha(alpha)
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise CLIPRewardError(f"reward batch size must be >= 1, got {batch_size}")
        self.model = model.eval()
        # load_clip's precision: half-precision weights run under autocast in their own type
        half = {p.dtype for p in model.parameters()} & {torch.float16, torch.bfloat16}
        self.autocast_dtype = half.pop() if half else None
        self.tokenizer = tokenizer
        self.alpha = alpha
        self.batch_size = batch_size
        self.preprocess = FramePreprocessor(model)
        self.image_size = self.preprocess.image_size

        self.register_buffer("target", self.embed_prompts(target_prompts, side="target"))
        self.register_buffer("baseline", self.embed_prompts(baseline_prompts, side="baseline"))
        self.register_buffer("direction", self.target - self.baseline)
        self.register_buffer("projection", projection_matrix(self.target, self.baseline, alpha))

    @property
    def device(self) -> torch.device:
        return self.target.device

    @property
    def precision(self) -> str:
        """The weights' precision, as load_clip names it."""
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.autocast_dtype, "fp32")

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self):
        """Mixed precision in the half type of the model's weights (see load_clip's precision); off for float32 weights."""
        return torch.autocast(self.model_device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    @torch.inference_mode()
    def embed_prompts(self, prompts: Sequence[str], side: str = "prompt") -> torch.Tensor:
        """Embed each prompt, normalise each embedding, and return their mean (D,)."""
        prompts = check_prompts(prompts, "prompts" if side == "prompt" else f"{side} prompts")
        context_length = getattr(self.tokenizer, "context_length", None)
        for prompt in prompts:  # the tokenizer would cut a longer prompt silently
            count = _token_count(self.tokenizer, prompt)
            if context_length and count is not None and count > context_length:
                raise CLIPRewardError(
                    f"{'prompt' if side == 'prompt' else side + ' prompt'} {prompt[:40] + '...' if len(prompt) > 40 else prompt!r} "
                    f"is {count} tokens, more than this CLIP's text context of "
                    f"{context_length} (start and end tokens included): shorten it"
                )
        tokens = self.tokenizer(prompts).to(self.model_device)
        with self.autocast():
            embeddings = self.model.encode_text(tokens).float()
        return F.normalize(embeddings, dim=-1).mean(dim=0)

    @torch.inference_mode()
    def embed_images(self, frames: FrameBatch) -> torch.Tensor:
        """Normalised CLIP image embeddings s (N, D) of uint8 frames (N, H, W, 3), batched."""
        frames = _check_frames(frames)
        embeddings = []
        for start in range(0, len(frames), self.batch_size):
            images = self.preprocess(frames[start : start + self.batch_size])
            with self.autocast():
                embeddings.append(self.model.encode_image(images).float())
        return F.normalize(torch.cat(embeddings), dim=-1)

    def rewards_from_embeddings(self, image_embeddings: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Rewards (N,) of image embeddings; alpha other than the model's builds its own P."""
        projection = self.projection if alpha is None else projection_matrix(self.target, self.baseline, alpha)
        is_tensor = isinstance(image_embeddings, torch.Tensor)
        if not is_tensor or image_embeddings.shape[1:] != self.target.shape:
            got = tuple(image_embeddings.shape) if is_tensor else type(image_embeddings).__name__
            raise CLIPRewardError(f"image embeddings must be a tensor (N, {len(self.target)}) of this CLIP's, got {got}")
        return goal_baseline_reward(image_embeddings, self.target, projection)

    def direction_components(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(along, off) (N,) each: the image embeddings' component along the baseline -> goal direction and the size of
        the rest (goal_direction_components); what alpha keeps and what it scales down."""
        return goal_direction_components(image_embeddings, self.target, self.baseline)

    @torch.inference_mode()
    def forward(self, frames: FrameBatch) -> torch.Tensor:
        """Rewards (N,) float32 on the model's device for uint8 frames (N, H, W, 3)."""
        return self.rewards_from_embeddings(self.embed_images(frames))

    @torch.inference_mode()
    def score(self, frames: FrameBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rewards, along, off), (N,) each, for uint8 frames (N, H, W, 3): the rewards forward gives, and the frame
        embeddings' components along the baseline -> goal direction and off it (direction_components), from one pass."""
        embeddings = self.embed_images(frames)
        return (self.rewards_from_embeddings(embeddings), *self.direction_components(embeddings))


# --------------------------------------------------------------------------------------
# Loading: an open_clip model, then the reward model
# --------------------------------------------------------------------------------------


PRECISIONS = ("fp32", "fp16", "bf16")


def load_clip(
    model_spec: str,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    precision: str = "fp32",
):
    """Load an open_clip model and its tokenizer; returns (model, tokenizer), model in eval mode.

    model_spec is one of
      "ARCH/PRETRAINED"   e.g. "ViT-B-32/laion2b_s34b_b79k", "ViT-bigG-14/laion2b_s39b_b160k"
                          (weights are downloaded once into the Hugging Face cache);
      "ARCH" with checkpoint=path to a local weights file (offline use);
      "local-dir:/path"   a folder with open_clip_config.json and the weights file;
      "hf-hub:org/repo"   an open_clip model on the Hugging Face Hub.

    precision "fp16" or "bf16" holds the weights in half precision (open_clip's mixed precision: layer norms run in
    float32), half the memory (ViT-bigG-14: ~10 GB -> ~5 GB); the reward model then runs under autocast.
    """
    device = _check_device(device)
    name, pretrained = check_clip_spec(model_spec, checkpoint, precision)
    model = _create_model(name, pretrained, device, cache_dir, model_spec, precision)
    return model, open_clip.get_tokenizer(name)


def check_clip_spec(model_spec: str, checkpoint: str | None = None, precision: str = "fp32") -> tuple[str, str | None]:
    """CLIPRewardError for a model spec, weights file or precision that load_clip would refuse, found without loading
    or downloading anything; else (open_clip's model name, its pretrained tag or weights file)."""
    if not isinstance(model_spec, str) or not model_spec.strip():
        raise CLIPRewardError(f"model_spec must be a name such as {DEFAULT_MODEL!r}, got {model_spec!r}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise CLIPRewardError(f"checkpoint must be the path of a weights file, got {checkpoint!r}")
    if precision not in PRECISIONS:
        raise CLIPRewardError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    schema = model_spec.split(":", 1)[0] if ":" in model_spec else None
    if schema in ("local-dir", "hf-hub"):
        if checkpoint is not None:
            raise CLIPRewardError(f"{model_spec} brings its own weights; drop --clip-checkpoint")
        if schema == "local-dir":
            folder = model_spec.split(":", 1)[1]
            if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
                raise CLIPRewardError(f"{model_spec}: expected a folder with open_clip_config.json and a weights file")
            _check_config(os.path.join(folder, "open_clip_config.json"))
            if not any(glob.glob(os.path.join(folder, f"*.{suffix}")) for suffix in ("safetensors", "bin", "pth")):
                # open_clip would build the model with random weights: rewards that mean nothing
                raise CLIPRewardError(
                    f"{model_spec}: no weights file (*.safetensors, *.bin, *.pth) beside open_clip_config.json"
                )
        return model_spec, None

    architecture, _, pretrained = model_spec.partition("/")
    if architecture not in open_clip.list_models():
        close = difflib.get_close_matches(architecture, open_clip.list_models(), n=5, cutoff=0.5)
        examples = close or ["ViT-B-32", "ViT-L-14", "ViT-H-14", "ViT-bigG-14", "RN50"]
        raise CLIPRewardError(f"unknown CLIP architecture '{architecture}'; valid names include: {', '.join(examples)}")
    if pretrained and checkpoint is not None:
        raise CLIPRewardError(f"give either a pretrained tag ({model_spec}) or --clip-checkpoint, not both")
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise CLIPRewardError(f"CLIP checkpoint file not found: {checkpoint}")
        if not _looks_like_weights(checkpoint):
            raise CLIPRewardError(
                f"could not load {checkpoint} as {architecture} weights: not a weights file (neither PyTorch's nor safetensors)"
            )
        pretrained = checkpoint
    elif not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        raise CLIPRewardError(
            f"no weights for '{architecture}': use ARCH/PRETRAINED (e.g. {architecture}/{tags[0] if tags else '...'}) "
            "or pass a local weights file with --clip-checkpoint"
        )
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if pretrained not in tags:
            listed = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "")
            raise CLIPRewardError(f"unknown pretrained tag '{pretrained}' for {architecture}; valid tags: {listed or 'none'}")
    return architecture, pretrained


def _check_device(device) -> torch.device:
    """torch.device(device), or CLIPRewardError saying why CLIP cannot go there."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise CLIPRewardError(f"bad device {device!r}: {str(error).splitlines()[0]}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIPRewardError(f"device {device}: no CUDA GPU is available here (use the CPU)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CLIPRewardError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _create_model(name: str, pretrained: str | None, device, cache_dir: str | None, model_spec: str, precision="fp32"):
    local_weights = pretrained if pretrained and os.path.isfile(pretrained) else None
    if name.startswith("local-dir:"):
        local_weights = name.split(":", 1)[1]
    hub = _unreachable_hub() if local_weights is None else None
    try:
        # An unreachable hub: only the cache, at once, instead of a minute of retries.
        with _hub_offline(hub is not None, quiet=local_weights is None):
            model = open_clip.create_model(
                name, pretrained=pretrained, device=device, cache_dir=cache_dir, precision=precision
            )
    except Exception as error:
        if local_weights is not None:  # a wrong or corrupt file: say which and why, not a torch traceback
            raise CLIPRewardError(f"could not load {local_weights} as {name} weights: {_load_failure(error)}") from error
        if not isinstance(error, RuntimeError) or (
            "download" not in str(error).lower() and "hf hub" not in str(error).lower()
        ):
            raise
        from huggingface_hub import constants

        cache = cache_dir or constants.HF_HUB_CACHE
        architecture = model_spec.split("/")[0]
        why = f"{hub} is unreachable and they are not in {cache}" if hub else f"not in {cache} and the download failed"
        raise CLIPRewardError(
            f"could not download the weights of {model_spec} ({why}); offline, pass a local file "
            f"(--clip-model {architecture} --clip-checkpoint /path/to/weights.bin), set HF_HUB_OFFLINE=1 with a filled "
            "cache, or try the bundled tiny-CLIP demo in the README"
        ) from error
    return model.eval()


def _check_config(path: str) -> None:
    """CLIPRewardError unless `path` is an open_clip_config.json that open_clip can build a model from."""
    import json

    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CLIPRewardError(f"broken open_clip_config.json ({path}: {error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise CLIPRewardError(
            f'{path} has no "model_cfg": open_clip\'s format is {{"model_cfg": {{...}}, "preprocess_cfg": {{...}}}}'
        )


def _looks_like_weights(path: str) -> bool:
    """Whether the file starts as a weights file does: PyTorch's zip or pickle, or safetensors' JSON header."""
    with open(path, "rb") as f:
        start = f.read(9)
    return start[:2] == b"PK" or start[:1] == b"\x80" or (len(start) == 9 and start[8:9] == b"{")


def _load_failure(error: Exception) -> str:
    """The real cause of a failed load, in a few words."""
    text = str(error)
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame.f_code.co_name)
        traceback = traceback.tb_next
    # open_clip resizes a position embedding of another size: the file is another model's
    resized = any(name.startswith("resize_") and "pos_embed" in name for name in frames)
    if resized or "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        return "the weights do not fit this architecture (a file of another model?)"
    if "config" in text.lower() and ("json" in text.lower() or "valid" in text.lower()):
        return f"broken open_clip_config.json ({text.strip().splitlines()[-1][:120]})"
    if isinstance(error, EOFError) or any(word in text for word in ("zip", "pickle", "header", "magic number")):
        return "the file is truncated or not a weights file"
    return (text.strip().splitlines() or [type(error).__name__])[0].split(". ")[0]


def _unreachable_hub() -> str | None:
    """The Hugging Face Hub's host if it does not answer within 3 s (no proxy set, not already offline), else None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return None
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return None
    except OSError:
        return host


@contextlib.contextmanager
def _hub_offline(offline: bool, quiet: bool):
    """huggingface_hub's offline mode (the cache only) while `offline`; open_clip's error log (the exception raised
    after it says the same) silenced while `quiet`."""
    from huggingface_hub import constants

    saved, disabled = constants.HF_HUB_OFFLINE, logging.root.manager.disable
    constants.HF_HUB_OFFLINE = saved or offline
    if quiet:
        logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        logging.disable(disabled)


def load_reward_model(
    model_spec: str,
    target_prompts: Sequence[str],
    baseline_prompts: Sequence[str],
    alpha: float,
    checkpoint: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    precision: str | None = None,
) -> CLIPReward:
    """Load CLIP (see `load_clip`) and build the reward model; device defaults to CUDA if available, precision to
    half-precision weights (fp16) on a GPU and float32 on a CPU."""
    check_alpha(alpha)  # fail before a multi-GB download, not after
    check_prompts(target_prompts, "target_prompts")
    check_prompts(baseline_prompts, "baseline_prompts")
    device = _check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = precision or ("fp16" if device.type == "cuda" else "fp32")
    model, tokenizer = load_clip(model_spec, checkpoint=checkpoint, device=device, precision=precision)
    return CLIPReward(model, tokenizer, target_prompts, baseline_prompts, alpha, batch_size=batch_size)
