"""What a long training run needs besides RL, shared by the three training scripts (CleanRL keeps its buffer in
cleanrl_utils the same way). Each piece is one call at the matching step of a script:

    rank, world_size = run_utils.torchrun_rank()         # which process this is under torchrun: (0, 1) without
    args, checkpoint = run_utils.resume(args)            # --resume RUN: the run's own arguments and latest checkpoint
    run_utils.check_args(args, ARG_RULES, world_size)    # every argument against its rule, before any work
    stop = run_utils.StopOnSignal()                      # SIGTERM / SIGINT end the run after a step, with a checkpoint
    device = run_utils.init_device(args.cuda)            # cuda:LOCAL_RANK or the CPU, and torchrun's process group
    run_name, writer = run_utils.open_run(args, device, checkpoint, reward_model)  # runs/NAME, TensorBoard, wandb
    envs = run_utils.vector_env([...], args.async_envs)  # this process's share of the envs, in worker processes
    rb = run_utils.ReplayBuffer(...)                     # numpy arrays, with a state for checkpoints
    checkpoints = run_utils.Checkpoints(...)             # when to write, writing, restoring
    progress = run_utils.Progress(...)                   # a tqdm bar (plain lines in a log file)

Under torchrun (docs/multi_gpu.md) each process steps, renders and scores its own share of the envs; gradients
are averaged over the processes so the networks stay equal on every rank; rank 0 alone writes and prints.
"""

import contextlib
import glob
import importlib.util
import itertools
import math
import multiprocessing
import os
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import clip_envs
import clip_reward

# ---------------------------------------------------------------------------------------------------------------------
# Processes: one, or one per GPU under torchrun
# ---------------------------------------------------------------------------------------------------------------------

_object_group = None  # a gloo group for Python objects (stop decisions, checkpoints), whatever the tensors' backend


def torchrun_rank():
    """(rank, world size) of this process as torchrun set them, (0, 1) when started alone; ranks > 0 print nothing."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # errors still reach stderr
    return rank, world_size


def init_device(cuda):
    """cuda:LOCAL_RANK with --cuda and a GPU, else the CPU; under torchrun also the process group (NCCL on GPUs, gloo
    on CPUs), each process's env workers rendering on its own GPU."""
    global _object_group
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() and cuda else "cpu")
    if cuda and device.type == "cpu":
        print("no CUDA GPU found: running on the CPU")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        if device.type == "cuda":
            if device.index >= torch.cuda.device_count():
                sys.exit(f"error: {device} does not exist: start at most {torch.cuda.device_count()} processes per node")
            torch.cuda.set_device(device)
            os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", str(device.index))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _object_group = dist.new_group(backend="gloo")
    return device


def end_processes():
    """Leave torchrun's process group (nothing to do alone)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(*modules):
    """Under torchrun, every rank starts from rank 0's weights (averaged gradients then keep them equal)."""
    if dist.is_initialized():
        for param in itertools.chain(*(module.parameters() for module in modules)):
            dist.broadcast(param.data, src=0)


def average_gradients(parameters):
    """Under torchrun, replace each gradient by its mean over the processes (one all-reduce), as CleanRL's multi-GPU
    PPO does: every rank then takes the same optimizer step, from the whole batch. Alone, nothing to do."""
    if dist.is_initialized():
        grads = [param.grad for param in parameters]
        mean = torch.cat([grad.flatten() for grad in grads])
        dist.all_reduce(mean)
        mean /= dist.get_world_size()
        for grad, value in zip(grads, mean.split([grad.numel() for grad in grads])):
            grad.copy_(value.view_as(grad))


def local_envs(num_envs):
    """The indices of the run's envs this process steps: all of them alone, its share under torchrun."""
    rank, world_size = _rank(), _world_size()
    return range(rank * num_envs // world_size, (rank + 1) * num_envs // world_size)


def ignoring_signals(thunk):
    """The env thunk of a worker process: Ctrl-C and a scheduler's SIGTERM reach the whole process group, but only the
    training process acts on them (it checkpoints and closes the workers), also while a worker is still building its env."""

    def start_in_worker():
        if multiprocessing.parent_process() is not None:  # AsyncVectorEnv also builds one env in the training process
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return thunk()

    return start_in_worker


def vector_env(thunks, async_envs):
    """gymnasium's AsyncVectorEnv (each env steps and renders in a worker process, deaf to signals) with --async-envs
    and several envs, else its SyncVectorEnv."""
    if async_envs and len(thunks) > 1:
        return gym.vector.AsyncVectorEnv([ignoring_signals(thunk) for thunk in thunks])
    return gym.vector.SyncVectorEnv(thunks)


@contextlib.contextmanager
def exit_on_bad_input():
    """A reward model or a scene that cannot be built as asked ends the run with its one-line message, no traceback."""
    try:
        yield
    except (clip_reward.CLIPRewardError, clip_envs.SceneError) as error:
        refuse(f"error: {error}")


def _rank():
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def _world_size():
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def refuse(message):
    """Exit with status 1 and a one-line error, printed by rank 0 alone: every torchrun process checks the same input."""
    sys.exit(message if _rank() == 0 else 1)


# ---------------------------------------------------------------------------------------------------------------------
# Arguments: a table of rules, checked before any work
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What an argument may be: `test(value, args)` holds for a valid value, `text` says which values are valid."""

    test: Callable[[Any, Any], bool]
    text: str


def at_least(low):
    """A count or a tuple of counts, each >= low (NaN fails every comparison, so it is refused too); None, an optional
    argument left out, is valid."""
    return Rule(lambda value, args: value is None or all(v >= low for v in (value if isinstance(value, tuple) else (value,))),
                f">= {low}")  # fmt: skip


def in_range(low, high, open_low=False):
    """low <= value <= high, or low < value with open_low."""
    return Rule(lambda value, args: (low < value if open_low else low <= value) and value <= high,
                f"in {'(' if open_low else '['}{low}, {high}]")  # fmt: skip


POSITIVE_FINITE = Rule(lambda value, args: 0 < value < math.inf, "> 0 and finite")
NON_NEGATIVE_FINITE = Rule(lambda value, args: 0 <= value < math.inf, ">= 0 and finite")

SENTENCES = Rule(
    lambda value, args: value is None or (len(value) > 0 and all(p.strip() for p in value)),
    "one or more sentences, none of them blank",
)

RENDER_QUALITY = Rule(  # MuJoCo's shadow map and multisamples; larger than a GL draws is a late crash in the env workers
    lambda value, args: value is None or (0 <= value[0] <= 16384 and 0 <= value[1] <= 16),
    "SHADOW_SIZE in [0, 16384] and MULTISAMPLES in [0, 16]",
)

# The arguments every training script has, and what each may be.
COMMON_RULES = {
    "num_envs": at_least(1),
    "episode_length": at_least(1),
    "buffer_size": at_least(1),
    "batch_size": Rule(lambda value, args: 1 <= value <= args.buffer_size, ">= 1 and <= --buffer-size"),
    "train_frequency": at_least(1),
    "gradient_steps": at_least(1),
    "target_network_frequency": at_least(1),
    "hidden_sizes": at_least(1),
    "gamma": in_range(0, 1),
    "tau": in_range(0, 1, open_low=True),
    "learning_starts": at_least(0),
    "total_timesteps": Rule(lambda value, args: value >= max(args.num_envs, args.learning_starts),
                            ">= --num-envs and --learning-starts"),  # fmt: skip
    "seed": Rule(lambda value, args: 0 <= value <= 2**32 - 1 - args.num_envs,
                 "in [0, 2**32 - 1 - num_envs] (numpy's seed range)"),  # fmt: skip
    "checkpoint_frequency": at_least(0),
    "image_frequency": at_least(0),
    "prompt": SENTENCES,
    "baseline_prompt": SENTENCES,
    "exp_name": Rule(lambda value, args: re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*", value) is not None,
                     "a folder name (letters, digits, . _ + -)"),  # fmt: skip
}

# The arguments the two SAC scripts add to those.
SAC_RULES = {
    **COMMON_RULES,
    "policy_frequency": at_least(1),
    "policy_lr": POSITIVE_FINITE,
    "q_lr": POSITIVE_FINITE,
    "ent_coef": NON_NEGATIVE_FINITE,
}


MAX_ENV_WORKERS = 256  # a process each: beyond this, minutes to start and a signal's worth of tracebacks


def available_memory():
    """Bytes of memory this machine can still give (Linux's MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_in_memory(floats_per_transition):
    """A --buffer-size whose transitions (that many 4-byte numbers each, shared out under torchrun) fit in memory."""

    def test(value, args):
        return value >= 1 and value * floats_per_transition * 4 / _world_size() <= available_memory()

    gigabytes = available_memory() / 2**30
    return Rule(test, f">= 1 and fit in this machine's {gigabytes:.1f} GB of free memory ({floats_per_transition * 4} bytes "
                      "a transition)")  # fmt: skip


def writable_folder(path, flag):
    """Make the output folder `path` (given as `flag`) if it is missing, and exit with one line unless files can be
    written into it: results go there after the work, so this is checked before."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        refuse(f"error: {flag} {path}: cannot write there ({error.strerror or error})")


def check_args(args, rules, world_size=1):
    """Exit with one line naming the first argument that breaks its rule, the value and what is valid; then the
    counts shared out over torchrun's processes, and --track's wandb."""
    for name, rule in rules.items():
        if not rule.test(getattr(args, name), args):
            refuse(f"error: --{name.replace('_', '-')} must be {rule.text}, got {getattr(args, name)!r}")
    for name in ("num_envs", "batch_size"):
        if getattr(args, name) % world_size:
            flag, value = name.replace("_", "-"), getattr(args, name)
            refuse(f"error: --{flag} must be a multiple of the {world_size} processes, got {value}")
    if args.track and importlib.util.find_spec("wandb") is None:
        refuse("error: --track needs Weights & Biases: pip install wandb")
    if args.capture_video and os.path.exists("videos") and not (os.path.isdir("videos") and os.access("videos", os.W_OK)):
        what = "not a writable folder" if os.path.isdir("videos") else "a file"
        refuse(f"error: the run writes into videos/ here, and {os.path.abspath('videos')} is {what}")
    workers = args.num_envs // world_size if getattr(args, "async_envs", False) else 1
    if workers > MAX_ENV_WORKERS:
        refuse(f"error: --num-envs {args.num_envs} starts {workers} env worker processes (at most {MAX_ENV_WORKERS}); "
                 "use fewer envs or --no-async-envs")  # fmt: skip
    if _rank() > 0:  # every process checks the same input: warnings come from rank 0 alone
        return
    if getattr(args, "episode_length", 0) > args.total_timesteps // args.num_envs:  # (sac_clip_continuous_action.py: the env's)
        print(f"warning: --episode-length {args.episode_length} is longer than each env's {args.total_timesteps // args.num_envs} "
              "steps: no episode ends, so nothing is logged per episode", file=sys.stderr)  # fmt: skip
    if workers > 8 * (os.cpu_count() or 1):
        print(f"warning: {workers} env worker processes on {os.cpu_count()} cores: they will take turns", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------------
# The run's folder, TensorBoard and wandb
# ---------------------------------------------------------------------------------------------------------------------


def open_run(args, device, checkpoint=None, reward_model=None):
    """The run's folder runs/NAME (a new one, or the resumed run's), its TensorBoard writer and, with --track, its
    wandb run (the same one again on --resume); then one line says where the run runs. Rank 0 writes; the other ranks
    get a writer that writes nothing. Returns (run_name, writer)."""
    rank = _rank()
    if checkpoint is not None:
        run_name = os.path.basename(os.path.normpath(args.resume))
    elif rank == 0:
        for suffix in itertools.count():  # mkdir fails if the folder exists: two runs started together get their own
            run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}" + (f"_{suffix}" if suffix else "")
            try:
                os.makedirs(f"runs/{run_name}")
                break
            except FileExistsError:
                continue
            except OSError as error:
                sys.exit(f"error: cannot create the run folder runs/{run_name}: {error.strerror}")
    if checkpoint is None and dist.is_initialized():  # the other ranks learn the run's name from rank 0
        shared = [run_name if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0, group=_object_group)
        run_name = shared[0]
    print_setup(args, device, run_name, reward_model)
    if rank > 0:
        return run_name, NoWriter()
    try:
        os.makedirs(f"runs/{run_name}/checkpoints", exist_ok=True)
    except OSError as error:
        sys.exit(f"error: cannot write to runs/{run_name}: {error.strerror}")

    config = {**vars(args), "device": str(device)}
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=config,
            name=run_name,
            id=wandb_id(run_name),
            resume="allow",  # a resumed run continues its wandb run
            save_code=True,
        )
    # A resumed run writes into the same TensorBoard run; steps logged after its checkpoint are dropped (purge_step).
    writer = SummaryWriter(f"runs/{run_name}", purge_step=None if checkpoint is None else checkpoint["global_step"] + 1)
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{key}|{value}|" for key, value in config.items())
    )
    return run_name, writer


def wandb_id(run_name):
    """The wandb run id of a run folder: the folder's name in the characters wandb allows, so --resume finds it."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", run_name)[-64:]


class NoWriter:
    """TensorBoard for torchrun ranks other than 0: only rank 0 writes."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_text = add_image = add_histogram = close = add_scalar


class RewardWindow:
    """What CLIP paid for since the last write, for TensorBoard: the k highest- and the k lowest-reward frames (kept as
    the steps come, never the whole window), every reward, and the mean components of the frame embeddings along the
    baseline -> goal direction and off it (clip_reward.goal_direction_components). Every `frequency` env steps (0:
    never) it writes images/highest_clip_reward and images/lowest_clip_reward (grids, each frame labelled with its
    reward and, where the task has a predicate, whether it holds), the histogram rewards/clip_reward and the scalars
    rewards/along_goal_direction and rewards/off_direction, then starts a new window. Under torchrun each rank keeps
    its own frames and rank 0's writer alone writes (the other ranks' is a NoWriter). A checkpoint keeps the window."""

    def __init__(self, writer, frequency, k=8, thumbnail_height=160):
        self.writer, self.frequency, self.k, self.thumbnail_height = writer, frequency, k, thumbnail_height
        self.next_write = None  # the first multiple of frequency after the run's (or the resumed part's) first step
        self._start_window()

    def _start_window(self):
        self.rewards, self.along, self.off, self.env_rewards = [], [], [], []
        self.highest, self.lowest = [], []  # (reward, order seen, frame, task) each, best first

    def add(self, frames, rewards, along, off, task=None, keep=None, env_rewards=None):
        """One vector step: frames (N, H, W, 3) uint8, their rewards and direction components (N,), the task predicate
        per frame (N,) bool or None; `keep` (N,) bool leaves out the frames that are not transitions (an autoreset);
        `env_rewards` (N,), the env's own reward of the same steps, for their correlation with CLIP's."""
        if not self.frequency:
            return
        rewards, along, off = (np.asarray(torch.as_tensor(x).float().cpu()) for x in (rewards, along, off))
        keep = np.ones(len(rewards), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
        for i in np.flatnonzero(keep):
            entry = (float(rewards[i]), len(self.rewards), frames[i], None if task is None else bool(task[i]))
            self.rewards.append(entry[0])
            for kept, sign in ((self.highest, 1), (self.lowest, -1)):
                if len(kept) < self.k or sign * entry[0] > sign * kept[-1][0]:
                    kept.append(entry[:2] + (np.array(entry[2]),) + entry[3:])  # a copy: the env reuses its buffer
                    kept.sort(key=lambda e: (-sign * e[0], e[1]))
                    del kept[self.k :]
        self.along.extend(along[keep].tolist())
        self.off.extend(off[keep].tolist())
        if env_rewards is not None:
            self.env_rewards.extend(np.asarray(env_rewards, dtype=float)[keep].tolist())

    def write_if_due(self, global_step):
        """Write the window once `frequency` env steps have passed since the last write."""
        if not self.frequency:
            return
        if self.next_write is None:
            self.next_write = (global_step // self.frequency + 1) * self.frequency
        if global_step < self.next_write:
            return
        self.next_write = (global_step // self.frequency + 1) * self.frequency
        if self.rewards:
            for tag, kept in (("images/highest_clip_reward", self.highest), ("images/lowest_clip_reward", self.lowest)):
                self.writer.add_image(tag, self.grid(kept), global_step, dataformats="HWC")
                self.keep_frames(tag.split("/")[1].split("_")[0], kept, global_step)
            self.writer.add_histogram("rewards/clip_reward", np.array(self.rewards), global_step)
            if np.isfinite(self.along).all():  # without a baseline prompt there is no direction
                self.writer.add_scalar("rewards/along_goal_direction", float(np.mean(self.along)), global_step)
                self.writer.add_scalar("rewards/off_direction", float(np.mean(self.off)), global_step)
            correlation = clip_vs_env_correlation(self.rewards, self.env_rewards)
            if correlation is not None:
                self.writer.add_scalar("rewards/clip_vs_env_correlation", correlation, global_step)
        self._start_window()

    def state_dict(self):
        """The window so far, for a checkpoint: a resumed run writes the window an uninterrupted run would."""
        names = ("next_write", "rewards", "along", "off", "env_rewards", "highest", "lowest")
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    def keep_frames(self, group, kept, global_step):
        """The grid's frames as PNGs in RUN/clip_frames/<highest|lowest>/, named by step, rank and reward, so that a person
        can rate what CLIP paid most and least for (rate.py serve RUN/clip_frames): the run's hack check."""
        folder = getattr(self.writer, "log_dir", None)  # rank 0's run folder; other ranks write nothing
        if folder is None:
            return
        from PIL import Image

        os.makedirs(os.path.join(folder, "clip_frames", group), exist_ok=True)
        for rank, (reward, _, frame, _) in enumerate(kept, start=1):
            name = f"step_{global_step:09d}-{rank}-reward_{reward:.4f}.png"
            Image.fromarray(frame).save(os.path.join(folder, "clip_frames", group, name))

    def grid(self, kept):
        """The kept frames side by side, best first, each scaled to thumbnail_height with its label above it."""
        from PIL import Image, ImageDraw

        tiles = []
        for reward, _, frame, task in kept:
            image = Image.fromarray(frame)
            width = max(1, round(image.width * self.thumbnail_height / image.height))
            image = image.resize((width, self.thumbnail_height), Image.BICUBIC)
            tile = Image.new("RGB", (width, self.thumbnail_height + 16), "white")
            tile.paste(image, (0, 16))
            label = f"{reward:.3f}" + ("" if task is None else (" task" if task else " not task"))
            ImageDraw.Draw(tile).text((3, 2), label, fill="black")
            tiles.append(np.asarray(tile))
        return np.concatenate(tiles, axis=1)


def clip_vs_env_correlation(clip_rewards, env_rewards):
    """Pearson correlation of the per-step CLIP and env rewards of the same steps; None where it is undefined (no env
    rewards, fewer than 2 steps, or either reward constant)."""
    if len(env_rewards) != len(clip_rewards) or len(clip_rewards) < 2:
        return None
    clip_rewards, env_rewards = np.asarray(clip_rewards, dtype=float), np.asarray(env_rewards, dtype=float)
    if np.ptp(clip_rewards) == 0 or np.ptp(env_rewards) == 0:
        return None
    return float(np.corrcoef(clip_rewards, env_rewards)[0, 1])


def say_how_success_is_judged(args, rule):
    """One line before the run: the automatic success rule of its task, or, for a prompt without one, that the run
    reports no success and how a person rates it instead."""
    if _rank() > 0:
        return
    if rule is not None:
        print(f"success: {rule} (the paper's rule), logged as charts/success")
    else:
        print("success: none is computed for this prompt (no --task names a goal to check); run with --capture-video "
              "and rate the episodes (docs/your_own_environment.md#judging-a-run)")


_uploaded_videos = {}  # path -> modification time of the file when it was uploaded


def upload_videos(run_name, writer=None, global_step=0):
    """The episode videos written since the last call (--capture-video), from rank 0: into TensorBoard as
    videos/episode (an animated GIF, which the images tab plays) and, with --track, to wandb."""
    if _rank() != 0:
        return
    for video in sorted(glob.glob(f"videos/{run_name}/*.mp4")):
        modified = os.stat(video).st_mtime_ns
        if _uploaded_videos.get(video) == modified:
            continue
        _uploaded_videos[video] = modified
        if writer is not None and not isinstance(writer, NoWriter):
            writer._get_file_writer().add_summary(video_summary("videos/episode", video), global_step)
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            import wandb

            wandb.log({"videos": wandb.Video(video)})


def skip_videos_on_disk(run_name):
    """On resume: a video already in videos/ was uploaded before the checkpoint (its TensorBoard event is kept) or
    after it (that event is purged, and the resumed run records its episode again, into the same file): upload none of
    them until it is written anew."""
    for video in glob.glob(f"videos/{run_name}/*.mp4"):
        _uploaded_videos[video] = os.stat(video).st_mtime_ns


def video_summary(tag, path):
    """A TensorBoard image summary holding the mp4 at `path` as an animated GIF. (torch's add_video makes the same
    summary but needs moviepy 1's moviepy.editor, which the moviepy 2 that gymnasium records with no longer has.)"""
    import io

    from moviepy import VideoFileClip
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with VideoFileClip(path, audio=False) as clip:
        frames, fps = [Image.fromarray(frame) for frame in clip.iter_frames()], clip.fps
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    image = Summary.Image(height=frames[0].height, width=frames[0].width, colorspace=3, encoded_image_string=gif.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def print_setup(args, device, run_name, reward_model=None):
    """One line before the first step: where the run runs, how many envs, which CLIP in which precision, its folder."""
    world_size = _world_size()
    where = f"{device}" if world_size == 1 else f"{world_size} processes ({dist.get_backend()}), rank 0 on {device}"
    envs = f"{args.num_envs // world_size} envs" + (" per process" if world_size > 1 else "")
    workers = "worker processes" if args.async_envs and args.num_envs // world_size > 1 else "in this process"
    reward = f"CLIP {args.clip_model} in {reward_model.precision}" if reward_model is not None else "the env's own reward"
    print(f"running on {where}: {envs} ({workers}), {reward}, run folder runs/{run_name}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# The replay buffer
# ---------------------------------------------------------------------------------------------------------------------


class ReplayBufferSamples(NamedTuple):
    observations: torch.Tensor
    next_observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor


class ReplayBuffer:
    """Transitions in numpy arrays, sampled uniformly as tensors on `device` (the fields of CleanRL's buffer); its
    `state_dict` holds the filled part, for checkpoints."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "dones")

    def __init__(self, buffer_size, observation_space, action_space, device):
        discrete = isinstance(action_space, gym.spaces.Discrete)
        action_shape, action_dtype = ((1,), np.int64) if discrete else (action_space.shape, np.float32)
        self.obs = np.zeros((buffer_size, *observation_space.shape), dtype=np.float32)
        self.next_obs = np.zeros((buffer_size, *observation_space.shape), dtype=np.float32)
        self.actions = np.zeros((buffer_size, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(buffer_size, dtype=np.float32)
        self.dones = np.zeros(buffer_size, dtype=np.float32)
        self.buffer_size, self.pos, self.full, self.device = buffer_size, 0, False, torch.device(device)

    def add(self, obs, next_obs, action, reward, done):
        self.obs[self.pos], self.next_obs[self.pos], self.actions[self.pos] = obs, next_obs, action
        self.rewards[self.pos], self.dones[self.pos] = reward, done
        self.pos = (self.pos + 1) % self.buffer_size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size):
        idx = np.random.randint(0, self.buffer_size if self.full else self.pos, size=batch_size)
        return ReplayBufferSamples(*(torch.as_tensor(getattr(self, name)[idx], device=self.device) for name in self.FIELDS))

    def state_dict(self):
        """The filled part, as tensors sharing the arrays' memory."""
        filled = self.buffer_size if self.full else self.pos
        return {**{name: torch.from_numpy(getattr(self, name)[:filled]) for name in self.FIELDS}, "pos": self.pos,
                "full": self.full}  # fmt: skip

    def load_state_dict(self, state):
        for name in self.FIELDS:
            getattr(self, name)[: len(state[name])] = state[name].numpy()
        self.pos, self.full = state["pos"], state["full"]


# ---------------------------------------------------------------------------------------------------------------------
# Signals, checkpoints and --resume
# ---------------------------------------------------------------------------------------------------------------------


class StopOnSignal:
    """SIGTERM (kill, a cluster's scheduler) and SIGINT (Ctrl-C) ask the run to stop after the current step, with a
    checkpoint (`signum` is then set). Before the run's checkpoints exist (`armed` False), or at a second signal, the
    process ends at once."""

    def __init__(self):
        self.signum, self.armed = 0, False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame):
        # Under torchrun the launcher forwards a signal the terminal also sent, so a second one is no hurry there; the
        # launcher kills what is left after its --shutdown-timeout.
        if not self.armed or (self.signum and _world_size() == 1):
            print(f"stopped by {signal.Signals(signum).name}, without a checkpoint", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: a crash or a full disk never leaves a broken file under `path`."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_model(obj, path):
    """The trained networks, written atomically by rank 0; a failed write is one line and a non-zero exit."""
    if _rank() == 0:
        try:
            save_atomic(obj, path)
        except OSError as error:
            sys.exit(f"error: could not save the model to {path} ({error.strerror or error}); the checkpoints are kept")
        print(f"model saved to {path}")


def latest_checkpoint(run_dir):
    """Path of the checkpoint with the most steps in `run_dir`, or None."""
    paths = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt")))
    return paths[-1] if paths else None


# The arguments a resumed run may take from the new command line instead of the checkpoint.
NEW_ON_RESUME = ("resume", "cuda")


def resume(args):
    """Without --resume: (args, None). With --resume RUN_DIR: (the run's saved arguments, its latest checkpoint).
    Flags given again must have the run's values, so the original command with --resume appended, or a scheduler's
    requeued command line, continues the run; a flag with another value is refused in one line."""
    if args.resume is None:
        return args, None
    script = os.path.basename(sys.argv[0])
    if not os.path.isdir(args.resume):
        refuse(f"error: --resume {args.resume}: no such folder (a run folder is runs/ENV__EXP__SEED__TIME)")
    checkpoint_path = latest_checkpoint(args.resume)
    if checkpoint_path is None:
        refuse(f"error: --resume {args.resume}: no checkpoints/step_*.pt in that folder")
    run_name = os.path.basename(os.path.normpath(args.resume))
    if not os.path.isdir(f"runs/{run_name}") or not os.path.samefile(args.resume, f"runs/{run_name}"):
        refuse(f"error: --resume {args.resume}: run this from the folder that holds the run's runs/ (and videos/)")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged file (checkpoints are written atomically, so not by this script)
        refuse(f"error: cannot read {checkpoint_path} ({type(error).__name__}): resume from an earlier one by moving it away")
    if not isinstance(checkpoint, dict) or "ranks" not in checkpoint:
        refuse(f"error: --resume {args.resume}: {checkpoint_path} was written by an older version of this script")
    if checkpoint.get("script", script) != script:
        refuse(f"error: --resume {args.resume}: that run was written by {checkpoint['script']}; resume it with that script")
    if len(checkpoint["ranks"]) != _world_size():
        refuse(f"error: --resume {args.resume}: the run had {len(checkpoint['ranks'])} processes; resume it with as many")
    try:
        saved = type(args)(**{**checkpoint["args"], **{name: getattr(args, name) for name in NEW_ON_RESUME}})
    except TypeError:  # another script's arguments
        env_id = checkpoint["args"].get("env_id", "another env")
        refuse(f"error: --resume {args.resume}: that run ({env_id}) was not written by {script}; resume it with its own")
    # The command line parsed again with the run's values as defaults: any flag given with another value shows.
    given = tyro.cli(type(args), default=saved)
    for field in fields(saved):
        if field.name not in NEW_ON_RESUME and getattr(given, field.name) != getattr(saved, field.name):
            flag = field.name.replace("_", "-")
            refuse(f"error: --resume {args.resume}: --{flag} {getattr(given, field.name)!r} differs from the run's "
                     f"{getattr(saved, field.name)!r}: drop it, or start a new run")  # fmt: skip
    print(f"resuming {args.resume} from {checkpoint_path} (step {checkpoint['global_step']}) with its saved arguments")
    if checkpoint["iteration"] >= saved.total_timesteps // saved.num_envs:
        print(f"the run is complete ({saved.total_timesteps} steps): nothing left to train")
    return saved, checkpoint


def _random_state(device):
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_random_state(state, device):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"])


class Checkpoints:
    """The run's checkpoints in runs/NAME/checkpoints/step_N.pt: the networks, optimizers and tensors given by name,
    every env's own state (from its worker), the random generators, the loop's variables of each process, and with
    --checkpoint-buffer the replay buffer (buffer_N.pt, the latest only). `due` says when, the same on every rank;
    `save` writes and, when a signal asked the run to stop, ends it; `restore` puts a checkpoint back. `saved` maps
    names to what has a state_dict (networks, optimizers) or is a tensor; more may be added to it later."""

    def __init__(self, run_name, args, envs, rb, writer, stop, saved):
        self.folder, self.args, self.envs, self.rb, self.writer = f"runs/{run_name}/checkpoints", args, envs, rb, writer
        self.stop, self.device, self.saved, self.pending = stop, rb.device, saved, False
        self.run_name, self.written = run_name, latest_checkpoint(f"runs/{run_name}")
        self.recent_returns = []  # training returns since the last checkpoint
        stop.armed = True  # from now on a signal waits for the end of the step and its checkpoint

    def record_return(self, episode_return):
        """A finished training episode's return (CLIP's, or the env's with --reward ground-truth): a checkpoint's
        training return is the mean of those since the one before, and evaluate.py picks the best checkpoint by it."""
        self.recent_returns.append(float(episode_return))

    def due(self, global_step, last, autoreset):
        """Whether to write a checkpoint after this step: every --checkpoint-frequency env steps, when a signal asked
        the run to stop, and at the end; never while an env waits for its autoreset (a flag inside the vector env that
        a checkpoint cannot restore; episodes have a fixed length and end together, so that costs a step at most)."""
        frequency = self.args.checkpoint_frequency
        self.pending = self.pending or (frequency > 0 and global_step % frequency < self.args.num_envs)
        stop, waiting = self.stop.signum, bool(autoreset.any())
        if dist.is_initialized():  # the same decision on every rank: stop if any rank got a signal, wait if any env must
            decision = torch.tensor([stop, waiting])
            dist.all_reduce(decision, op=dist.ReduceOp.MAX, group=_object_group)
            stop, waiting = int(decision[0]), bool(decision[1])
        self.stopping, self.last = stop, last
        return last or ((self.pending or stop) and not waiting)

    def save(self, global_step, iteration, **loop):
        """Write the checkpoint of this step, with this process's loop variables `loop`; then end the run if a signal
        asked for it."""
        self.pending = False
        path = f"{self.folder}/step_{global_step:09d}.pt"
        rank_state = {  # this process's envs, episodes in progress and random generators
            "envs": self.envs.call("checkpoint_state"),
            "action_space": self.envs.single_action_space.np_random.bit_generator.state,  # random actions before learning
            "rng": _random_state(self.device),
            "recent_returns": self.recent_returns,
            **loop,
        }
        self.recent_returns = []
        buffer = self.rb.state_dict() if self.args.checkpoint_buffer else None
        rank_states, buffers = [rank_state], [buffer]
        if dist.is_initialized():  # to rank 0, which writes the run's one checkpoint
            gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
            dist.gather_object((rank_state, buffer), gathered, dst=0, group=_object_group)
            rank_states, buffers = zip(*gathered) if dist.get_rank() == 0 else ((), ())
        if _rank() == 0:
            returns = [episode_return for state in rank_states for episode_return in state["recent_returns"]]
            checkpoint = {
                "script": os.path.basename(sys.argv[0]),
                "args": vars(self.args),
                "global_step": global_step,
                "iteration": iteration,
                "training_return": float(np.mean(returns)) if returns else float("nan"),
                **{
                    name: value.detach() if torch.is_tensor(value) else value.state_dict()
                    for name, value in self.saved.items()
                },
                "ranks": list(rank_states),
            }
            buffer_path = path.replace("step_", "buffer_")
            try:
                if self.args.checkpoint_buffer:
                    save_atomic({"ranks": list(buffers)}, buffer_path)
                save_atomic(checkpoint, path)
                self.written = path
                for old_buffer in glob.glob(f"{self.folder}/buffer_*.pt"):  # only the latest is needed
                    if old_buffer != buffer_path:
                        os.remove(old_buffer)
            except OSError as error:
                kept = f"the latest checkpoint is {self.written}" if self.written else "no checkpoint was written"
                print(f"error: could not write {path} ({error.strerror or error}); {kept}", file=sys.stderr)
                if self.last and not self.stopping:  # the run's result is lost: the caller must know
                    sys.exit(1)
        if self.stopping:
            self.writer.close()
            self.envs.close()
            end_processes()
            if _rank() == 0:
                print(f"stopped by {signal.Signals(self.stopping).name} at step {global_step}: resume with --resume "
                      f"runs/{self.run_name}", file=sys.stderr)  # fmt: skip
            sys.exit(128 + self.stopping)

    def restore(self, checkpoint):
        """Load a checkpoint into the networks, optimizers, envs, random generators and (if it was saved) the replay
        buffer; returns this process's loop variables, with `updates_start`: the step after which the learner updates
        (later than --learning-starts when the buffer was not saved and must refill first)."""
        for name, value in self.saved.items():
            value.data.copy_(checkpoint[name]) if torch.is_tensor(value) else value.load_state_dict(checkpoint[name])
        rank_state = checkpoint["ranks"][_rank()]
        self.envs.set_attr("state_to_load", list(rank_state["envs"]))
        self.envs.call("load_checkpoint_state")
        self.envs.single_action_space.np_random.bit_generator.state = rank_state["action_space"]
        self.recent_returns = list(rank_state["recent_returns"])
        own = ("envs", "action_space", "rng", "recent_returns")
        loop = {name: value for name, value in rank_state.items() if name not in own}
        loop["updates_start"] = self.args.learning_starts
        buffer_path = f"{self.folder}/buffer_{checkpoint['global_step']:09d}.pt"
        if os.path.exists(buffer_path):
            self.rb.load_state_dict(torch.load(buffer_path, mmap=True)["ranks"][_rank()])
        else:
            loop["updates_start"] = checkpoint["global_step"] + self.args.learning_starts
            print(f"no replay buffer was saved (--checkpoint-buffer): refilling it until step {loop['updates_start']}")
        _set_random_state(rank_state["rng"], self.device)
        skip_videos_on_disk(self.run_name)
        return loop


# ---------------------------------------------------------------------------------------------------------------------
# Progress in the terminal
# ---------------------------------------------------------------------------------------------------------------------


def _is_terminal(stream):
    """Whether `stream` is a terminal with a size (a pseudo-terminal without one would show no bar)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).lines > 0
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """The run's env steps as a tqdm bar with steps/s and the latest episodes' numbers (the mean over the episodes that
    ended since the last update: CLIP return, task success, ...). Where stdout is not a terminal (a log file, a
    scheduler), one plain line every 1% of the run or every minute, whichever comes first, and at the end."""

    def __init__(self, total_timesteps, start_step):
        self.total, self.start_step, self.start_time = total_timesteps, start_step, time.time()
        self.ended, self.latest = {}, {}
        self.bar = None
        if _is_terminal(sys.stdout):
            self.bar = tqdm(total=total_timesteps, initial=start_step, unit="step", file=sys.stdout, dynamic_ncols=True)
        self.printed_step, self.printed_time = start_step, self.start_time

    def episode(self, **values):
        """Record one finished episode's numbers, shown at the next update."""
        for name, value in values.items():
            self.ended.setdefault(name, []).append(float(value))

    def update(self, global_step):
        """The run has reached `global_step` env steps."""
        if self.ended:
            self.latest = {name: float(np.mean(values)) for name, values in self.ended.items()}
            self.ended = {}
        if self.bar is not None:
            self.bar.set_postfix({name: f"{value:.2f}" for name, value in self.latest.items()}, refresh=False)
            self.bar.update(global_step - self.bar.n)
        elif (global_step - self.printed_step >= self.total / 100 or time.time() - self.printed_time >= 60
              or global_step >= self.total):  # fmt: skip
            self.printed_step, self.printed_time = global_step, time.time()
            numbers = "".join(f", {name}={value:.2f}" for name, value in self.latest.items())
            print(f"global_step={global_step}/{self.total}, SPS={self.sps(global_step)}{numbers}", flush=True)

    def sps(self, global_step):
        """Env steps per second since this run (or this resumed part of it) started."""
        return int((global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def close(self):
        if self.bar is not None:
            self.bar.close()
