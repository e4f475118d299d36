# VLM-RM on CartPole: CleanRL's DQN (https://docs.cleanrl.dev/rl-algorithms/dqn/#dqnpy)
# taught by a CLIP reward computed from the rendered frame after every step.
# Run: python dqn_clip_cartpole.py --prompt "pole vertically upright on top of the cart"
# Over 4 GPUs: torchrun --standalone --nproc-per-node 4 dqn_clip_cartpole.py ... (README, "Several GPUs: torchrun")
import glob
import importlib.util
import itertools
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

# torch's OpenMP threads sleep between ops instead of spinning: as fast alone, and ~8x faster when runs, tests or env
# workers share the cores (two tiny-CLIP CartPole runs side by side on 2 cores: 27 -> 218 env steps/s each). Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro
from torch.utils.tensorboard import SummaryWriter

import clip_envs
import clip_reward


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=False`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default (for both the Q network and CLIP)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (pip install wandb)"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save the Q network into the `runs/{run_name}` folder"""

    checkpoint_frequency: int = 64000
    """write a checkpoint to `runs/{run_name}/checkpoints` every this many env steps (the authors' 64k), at the end,
    and on SIGTERM/SIGINT; 0: only at the end and on a signal"""
    checkpoint_buffer: bool = False
    """also write the replay buffer (~16 MB here) with each checkpoint, so that --resume continues exactly"""
    resume: Optional[str] = None
    """continue the run in this folder (runs/...) from its latest checkpoint, with its saved arguments, to its total steps"""

    # CLIP reward (VLM-RM)
    reward: Literal["clip", "ground-truth"] = "clip"
    """what the agent learns from: the CLIP reward of the rendered frame, or CartPole's own reward (to check the DQN)"""
    prompt: tuple[str, ...] = (clip_envs.PROMPTS["cartpole"][0],)
    """the task as a sentence (the goal prompt g); several prompts are embedded, normalised and averaged"""
    baseline_prompt: tuple[str, ...] = (clip_envs.PROMPTS["cartpole"][1],)
    """the baseline prompt b describing the scene in general; only used when alpha > 0"""
    alpha: float = 0.0
    """goal-baseline regularisation strength in [0, 1]: 0 is the plain cosine reward (enough for CartPole), 1 keeps only the b->g direction"""
    clip_model: str = clip_reward.DEFAULT_MODEL
    """open_clip model as ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path"""
    clip_checkpoint: Optional[str] = None
    """local CLIP weights file for --clip-model ARCH (offline use)"""
    reward_batch_size: int = 64
    """the most frames CLIP embeds in one forward pass"""
    clip_precision: Optional[Literal["fp32", "fp16", "bf16"]] = None
    """CLIP's weights: default fp16 on a GPU (half the memory, under autocast), fp32 on a CPU"""

    # Algorithm specific arguments (CleanRL's DQN, retuned for fixed-length episodes: the
    # ground-truth run reaches the full return of 200 within ~10k steps)
    env_id: str = "CartPole-v1"
    """the id of the environment"""
    episode_length: int = 200
    """fixed episode length; episodes do not end when the pole falls, the cart stops at the track's ends"""
    total_timesteps: int = 50000
    """total timesteps of the experiments (summed over envs)"""
    learning_rate: float = 5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments, shared out under torchrun; CLIP scores all of a process's frames in
    one call"""
    async_envs: bool = True
    """with --num-envs > 1, step and render the envs in worker processes (gymnasium's AsyncVectorEnv), all at once"""
    buffer_size: int = 10000
    """the replay memory buffer size"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate"""
    target_network_frequency: int = 500
    """the vector steps between target network updates"""
    batch_size: int = 128
    """the batch size of sample from the reply memory"""
    start_e: float = 1
    """the starting epsilon for exploration"""
    end_e: float = 0.05
    """the ending epsilon for exploration"""
    exploration_fraction: float = 0.2
    """the fraction of `total-timesteps` it takes from start-e to go end-e"""
    learning_starts: int = 2000
    """timestep to start learning"""
    train_frequency: int = 2
    """train every this many vector steps (independent of --num-envs)"""
    gradient_steps: int = 1
    """Q-network updates (gradient steps) per training phase"""
    hidden_sizes: tuple[int, int] = (120, 84)
    """units in the Q network's two hidden layers (CleanRL's 120 84; the paper's 256 256)"""


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


def latest_checkpoint(run_dir):
    """Path of the checkpoint with the most steps in `run_dir`, or None."""
    paths = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt")))
    return paths[-1] if paths else None


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


class NoWriter:
    """TensorBoard for torchrun ranks other than 0: only rank 0 writes."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_text = close = add_scalar


def make_env(env_id, seed, idx, capture_video, run_name, episode_length, render):
    def thunk():
        env = clip_envs.make_cartpole(env_id, episode_length, render=render or capture_video)
        if capture_video and idx == 0:
            env = clip_envs.RecordVideo(env, f"videos/{run_name}")  # gymnasium's, without a false "overwriting" warning
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = clip_envs.FrameInInfo(env, render)  # the frame after each step, rendered where the env runs
        env.action_space.seed(seed)
        return env

    return thunk


class ReplayBuffer:
    def __init__(self, size, obs_shape, device):
        self.obs = np.zeros((size, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((size, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((size, 1), dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.dones = np.zeros(size, dtype=np.float32)
        self.size, self.pos, self.full, self.device = size, 0, False, device

    def add(self, obs, next_obs, action, reward, done):
        self.obs[self.pos], self.next_obs[self.pos], self.actions[self.pos] = obs, next_obs, action
        self.rewards[self.pos], self.dones[self.pos] = reward, done
        self.pos = (self.pos + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size):
        idx = np.random.randint(0, self.size if self.full else self.pos, size=batch_size)
        to_tensor = lambda x: torch.as_tensor(x[idx], device=self.device)
        return (
            to_tensor(self.obs),
            to_tensor(self.next_obs),
            to_tensor(self.actions),
            to_tensor(self.rewards),
            to_tensor(self.dones),
        )


# ALGO LOGIC: initialize agent here:
class QNetwork(nn.Module):
    def __init__(self, env, hidden_sizes=(120, 84)):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(np.array(env.single_observation_space.shape).prod(), hidden_sizes[0]),
            nn.ReLU(),
            nn.Linear(hidden_sizes[0], hidden_sizes[1]),
            nn.ReLU(),
            nn.Linear(hidden_sizes[1], env.single_action_space.n),
        )

    def forward(self, x):
        return self.network(x)


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


if __name__ == "__main__":
    args = tyro.cli(Args)
    # torchrun (README, "Several GPUs") starts one such process per GPU: each steps and renders its share of the envs and
    # scores its own frames with its own CLIP; gradients are averaged over the processes, so the networks stay the same on
    # every rank and the learner stays one. Rank 0 alone writes. Started without torchrun: rank 0 of 1.
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # progress from rank 0 only; errors still reach stderr
    checkpoint = None
    if args.resume is not None:  # the run's own arguments, and where it stopped
        given = [
            name for name, value in vars(Args()).items() if name not in ("resume", "cuda") and getattr(args, name) != value
        ]
        if given:
            sys.exit(f"error: --resume continues a run with its saved arguments; drop --{given[0].replace('_', '-')}")
        checkpoint_path = latest_checkpoint(args.resume)
        if checkpoint_path is None:
            sys.exit(f"error: --resume {args.resume}: no checkpoints/step_*.pt in that folder")
        run_name = os.path.basename(os.path.normpath(args.resume))
        if not os.path.isdir(f"runs/{run_name}") or not os.path.samefile(args.resume, f"runs/{run_name}"):
            sys.exit(f"error: --resume {args.resume}: run this from the folder that holds the run's runs/ (and videos/)")
        try:
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as error:  # a damaged file (checkpoints are written atomically, so not by this script)
            sys.exit(
                f"error: cannot read {checkpoint_path} ({type(error).__name__}): resume from an earlier one by moving it away"
            )
        if "ranks" not in checkpoint:
            sys.exit(f"error: --resume {args.resume}: {checkpoint_path} was written by an older version of this script")
        if len(checkpoint["ranks"]) != world_size:
            sys.exit(
                f"error: --resume {args.resume}: the run had {len(checkpoint['ranks'])} processes; resume it with as many"
            )
        args = Args(**{**checkpoint["args"], "resume": args.resume, "cuda": args.cuda})
        print(f"resuming {args.resume} from {checkpoint_path} (step {checkpoint['global_step']}) with its saved arguments")
    # Every argument, checked before any work: NaN, inf and out-of-range values stop here with one line.
    counts = (
        "num_envs",
        "episode_length",
        "total_timesteps",
        "batch_size",
        "buffer_size",
        "train_frequency",
        "gradient_steps",
        "target_network_frequency",
    )
    for name, (valid, rule) in {
        **{name: (getattr(args, name) >= 1, ">= 1") for name in counts},
        "hidden_sizes": (min(args.hidden_sizes) >= 1, ">= 1"),
        "gamma": (0 <= args.gamma <= 1, "in [0, 1]"),
        "tau": (0 < args.tau <= 1, "in (0, 1]"),
        "learning_rate": (0 < args.learning_rate < math.inf, "> 0 and finite"),
        "start_e": (0 <= args.start_e <= 1, "in [0, 1]"),
        "end_e": (0 <= args.end_e <= 1, "in [0, 1]"),
        "exploration_fraction": (0 < args.exploration_fraction <= 1, "in (0, 1]"),
        "env_id": (args.env_id in ("CartPole-v1", "CartPole-v0"), "CartPole-v1 or CartPole-v0"),
        "learning_starts": (args.learning_starts >= 0, ">= 0"),
        "seed": (0 <= args.seed <= 2**32 - 1 - args.num_envs, "in [0, 2**32 - 1 - num_envs] (numpy's seed range)"),
        "total_timesteps": (
            args.total_timesteps >= max(args.num_envs, args.learning_starts),
            ">= --num-envs and --learning-starts",
        ),
        "checkpoint_frequency": (args.checkpoint_frequency >= 0, ">= 0"),
        "exp_name": (
            re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*", args.exp_name) is not None,
            "a folder name (letters, digits, . _ + -)",
        ),
    }.items():
        if not valid:
            sys.exit(f"error: --{name.replace('_', '-')} must be {rule}, got {getattr(args, name)!r}")
    for name in ("num_envs", "batch_size"):  # shared out over the torchrun processes
        if getattr(args, name) % world_size:
            flag, value = name.replace("_", "-"), getattr(args, name)
            sys.exit(f"error: --{flag} must be a multiple of the {world_size} processes, got {value}")
    if args.track and importlib.util.find_spec("wandb") is None:
        sys.exit("error: --track needs Weights & Biases: pip install wandb")

    # SIGTERM (kill, a cluster's scheduler) and SIGINT (Ctrl-C) end the run after the current step, with a checkpoint.
    stop_signal = None

    def request_stop(signum, frame):
        global stop_signal
        # A second signal, or no step taken yet. (Under torchrun the launcher forwards a signal the terminal also sent, so a
        # second one is no hurry; the launcher kills what is left after its --shutdown-timeout.)
        if (stop_signal is not None and world_size == 1) or "global_step" not in globals():
            print(f"stopped by {signal.Signals(signum).name}, without a checkpoint", file=sys.stderr)
            os._exit(128 + signum)
        stop_signal = signum

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed + rank)  # each torchrun process explores with random numbers of its own
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() and args.cuda else "cpu")
    if args.cuda and device.type == "cpu":
        print("no CUDA GPU found: running on the CPU")
    if world_size > 1:
        if device.type == "cuda":
            if device.index >= torch.cuda.device_count():
                sys.exit(f"error: {device} does not exist: start at most {torch.cuda.device_count()} processes per node")
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        cpu_group = dist.new_group(backend="gloo")  # the per-step stop decision and checkpoints, as Python objects

    # The reward model: CLIP plus the embedded prompts (see clip_reward.py for the math).
    reward_model = None
    if args.reward == "clip":
        try:
            reward_model = clip_reward.load_reward_model(
                args.clip_model,
                target_prompts=args.prompt,
                baseline_prompts=args.baseline_prompt,
                alpha=args.alpha,
                checkpoint=args.clip_checkpoint,
                device=device,
                batch_size=args.reward_batch_size,
                precision=args.clip_precision,
            )
        except clip_reward.CLIPRewardError as error:
            sys.exit(f"error: {error}")

    # The run's folder, made once nothing can fail any more: a bad argument leaves nothing behind.
    if checkpoint is None and rank == 0:
        for suffix in itertools.count():  # mkdir fails if the folder exists: two runs started together get their own
            run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}" + (f"_{suffix}" if suffix else "")
            try:
                os.makedirs(f"runs/{run_name}")
                break
            except FileExistsError:
                continue
            except OSError as error:
                sys.exit(f"error: cannot create the run folder runs/{run_name}: {error.strerror}")
    if checkpoint is None and world_size > 1:  # the other ranks learn the run's name from rank 0
        shared = [run_name if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0, group=cpu_group)
        run_name = shared[0]
    try:
        if rank == 0:
            os.makedirs(f"runs/{run_name}/checkpoints", exist_ok=True)
    except OSError as error:
        sys.exit(f"error: cannot write to runs/{run_name}: {error.strerror}")

    if args.track and rank == 0:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config={**vars(args), "device": str(device)},
            name=run_name,
            save_code=True,
        )
    # A resumed run writes into the same TensorBoard run; steps logged after its checkpoint are dropped (purge_step).
    if rank == 0:
        writer = SummaryWriter(f"runs/{run_name}", purge_step=None if checkpoint is None else checkpoint["global_step"] + 1)
    else:
        writer = NoWriter()
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s"
        % ("\n".join([f"|{key}|{value}|" for key, value in {**vars(args), "device": device}.items()])),
    )
    uploaded_videos = set()

    # env setup: under torchrun each rank runs its share of the run's envs (their seeds and video as in one process)
    local_envs = range(rank * args.num_envs // world_size, (rank + 1) * args.num_envs // world_size)
    envs = (gym.vector.AsyncVectorEnv if args.async_envs and len(local_envs) > 1 else gym.vector.SyncVectorEnv)(
        [
            make_env(
                args.env_id,
                args.seed + i,
                i,
                args.capture_video,
                run_name,
                args.episode_length,
                render=reward_model is not None,
            )
            for i in local_envs
        ]
    )
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"

    q_network = QNetwork(envs, args.hidden_sizes).to(device)
    optimizer = optim.Adam(q_network.parameters(), lr=args.learning_rate)
    target_network = QNetwork(envs, args.hidden_sizes).to(device)
    if world_size > 1:  # every rank starts from rank 0's network, and averaged gradients keep them equal
        for param in q_network.parameters():
            dist.broadcast(param.data, src=0)
    target_network.load_state_dict(q_network.state_dict())

    rb = ReplayBuffer(math.ceil(args.buffer_size / world_size), envs.single_observation_space.shape, device)
    episode_clip_return = np.zeros(envs.num_envs)

    # TRY NOT TO MODIFY: start the game
    obs, _ = envs.reset(seed=args.seed + local_envs[0])
    # gymnasium's vector envs reset a finished env on the *next* step; that step is no transition.
    autoreset = np.zeros(envs.num_envs, dtype=bool)
    num_iterations = args.total_timesteps // args.num_envs
    start_iteration, updates_start, checkpoint_due = 1, args.learning_starts, False
    recent_returns = (
        []
    )  # training returns (CLIP's unless --reward ground-truth) since the last checkpoint: evaluate.py picks the best checkpoint by them

    if checkpoint is not None:  # --resume: everything as the checkpoint left it
        for name, module in (("q_network", q_network), ("target_network", target_network)):
            module.load_state_dict(checkpoint[name])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rank_state = checkpoint["ranks"][rank]  # this process's envs, episodes in progress and random generators
        envs.set_attr("state_to_load", list(rank_state["envs"]))
        envs.call("load_checkpoint_state")
        envs.single_action_space.np_random.bit_generator.state = rank_state["action_space"]
        obs, autoreset = rank_state["obs"], rank_state["autoreset"]
        episode_clip_return = rank_state["episode_clip_return"]
        recent_returns = rank_state["recent_returns"]
        buffer_path = f"runs/{run_name}/checkpoints/buffer_{checkpoint['global_step']:09d}.pt"
        if os.path.exists(buffer_path):
            buffer = torch.load(buffer_path, mmap=True)["ranks"][rank]
            for name in ("obs", "next_obs", "actions", "rewards", "dones"):
                getattr(rb, name)[: len(buffer[name])] = buffer[name].numpy()
            rb.pos, rb.full = buffer["pos"], buffer["full"]
        else:
            updates_start = checkpoint["global_step"] + args.learning_starts
            print(f"no replay buffer was saved (--checkpoint-buffer): refilling it until step {updates_start}")
        random.setstate(rank_state["rng"]["python"])
        np.random.set_state(rank_state["rng"]["numpy"])
        torch.set_rng_state(rank_state["rng"]["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(rank_state["rng"]["cuda"])
        start_iteration = checkpoint["iteration"] + 1
    start_step, start_time = (start_iteration - 1) * args.num_envs, time.time()

    for iteration in range(start_iteration, num_iterations + 1):
        global_step = iteration * args.num_envs
        # ALGO LOGIC: put action logic here
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step)
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs).to(device))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, ground_truth_rewards, terminations, truncations, infos = envs.step(actions)

        # ============ VLM-RM: the CLIP reward of the frame each env shows after its step ============
        if reward_model is not None:
            frames = infos["frame"]  # (num_envs, 400, 600, 3) uint8
            clip_rewards = reward_model(frames).cpu().numpy()
            rewards = clip_rewards
            episode_clip_return += np.where(autoreset, 0.0, clip_rewards)
        else:
            rewards = ground_truth_rewards
        # ===========================================================================================

        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_return, length = infos["episode"]["r"][i], infos["episode"]["l"][i]  # steps with the pole up
                sps = int((global_step - start_step) / (time.time() - start_time))
                message = f"global_step={global_step}/{args.total_timesteps}, episodic_return={episodic_return:.0f}"
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/upright_fraction", episodic_return / length, global_step)
                writer.add_scalar("charts/success", float(episodic_return == length), global_step)  # the pole never fell
                writer.add_scalar("charts/episodic_length", length, global_step)
                if reward_model is not None:
                    writer.add_scalar("charts/episodic_clip_return", episode_clip_return[i], global_step)
                    message += f", clip_return={episode_clip_return[i]:.2f}"
                    recent_returns.append(episode_clip_return[i])
                    episode_clip_return[i] = 0.0
                else:
                    recent_returns.append(episodic_return)
                print(f"{message}, epsilon={epsilon:.2f}, SPS={sps}")

            if args.track and args.capture_video and rank == 0:
                for video in sorted(set(glob.glob(f"videos/{run_name}/*.mp4")) - uploaded_videos):
                    wandb.log({"videos": wandb.Video(video)})
                    uploaded_videos.add(video)

        # TRY NOT TO MODIFY: save data to reply buffer
        for i in np.flatnonzero(~autoreset):
            rb.add(obs[i], next_obs[i], actions[i], rewards[i], terminations[i])
        autoreset = np.logical_or(terminations, truncations)

        # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
        obs = next_obs

        # ALGO LOGIC: training.
        if global_step > updates_start:
            if iteration % args.train_frequency == 0:
                for _ in range(args.gradient_steps):
                    data_obs, data_next_obs, data_actions, data_rewards, data_dones = rb.sample(args.batch_size // world_size)
                    with torch.no_grad():
                        target_max, _ = target_network(data_next_obs).max(dim=1)
                        td_target = data_rewards + args.gamma * target_max * (1 - data_dones)
                    old_val = q_network(data_obs).gather(1, data_actions).squeeze(1)
                    loss = F.mse_loss(td_target, old_val)

                    # optimize the model
                    optimizer.zero_grad()
                    loss.backward()
                    average_gradients(q_network.parameters())
                    optimizer.step()

                if iteration % 100 == 0:
                    writer.add_scalar("losses/td_loss", loss.item(), global_step)
                    writer.add_scalar("losses/q_values", old_val.mean().item(), global_step)
                    writer.add_scalar("charts/epsilon", epsilon, global_step)
                    writer.add_scalar("charts/SPS", int((global_step - start_step) / (time.time() - start_time)), global_step)

            # update target network
            if iteration % args.target_network_frequency == 0:
                for target_network_param, q_network_param in zip(target_network.parameters(), q_network.parameters()):
                    target_network_param.data.copy_(
                        args.tau * q_network_param.data + (1.0 - args.tau) * target_network_param.data
                    )

        # Checkpoint: every --checkpoint-frequency env steps, when a signal asked the run to stop, and at the end; never while
        # an env waits for its autoreset (a flag inside the vector env that a checkpoint cannot restore). Episodes have a
        # fixed length and end together, so that delays a checkpoint by one step at most.
        checkpoint_due = checkpoint_due or (
            args.checkpoint_frequency > 0 and global_step % args.checkpoint_frequency < args.num_envs
        )
        stop, waiting = stop_signal or 0, bool(autoreset.any())
        if world_size > 1:  # the same decision on every rank: stop if any rank got a signal, wait while any env autoresets
            decision = torch.tensor([stop, waiting])
            dist.all_reduce(decision, op=dist.ReduceOp.MAX, group=cpu_group)
            stop, waiting = int(decision[0]), bool(decision[1])
        if iteration == num_iterations or ((checkpoint_due or stop) and not waiting):
            checkpoint_due = False
            checkpoint_path = f"runs/{run_name}/checkpoints/step_{global_step:09d}.pt"
            rank_state = {  # this process's envs, episodes in progress and random generators
                "envs": envs.call("checkpoint_state"),  # each env's own state, from its worker
                "action_space": envs.single_action_space.np_random.bit_generator.state,  # random actions before learning
                "obs": obs,
                "autoreset": autoreset,
                "episode_clip_return": episode_clip_return,
                "recent_returns": recent_returns,
                "rng": {
                    "python": random.getstate(),
                    "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            }
            buffer = None
            if args.checkpoint_buffer:  # the filled part only, as tensors sharing the arrays' memory
                filled = rb.size if rb.full else rb.pos
                buffer = {
                    name: torch.from_numpy(getattr(rb, name)[:filled])
                    for name in ("obs", "next_obs", "actions", "rewards", "dones")
                }
                buffer.update(pos=rb.pos, full=rb.full)
            rank_states, buffers = [rank_state], [buffer]
            if world_size > 1:  # to rank 0, which writes the run's one checkpoint
                gathered = [None] * world_size if rank == 0 else None
                dist.gather_object((rank_state, buffer), gathered, dst=0, group=cpu_group)
                rank_states, buffers = zip(*gathered) if rank == 0 else ((), ())
            if rank == 0:
                returns = [episode_return for state in rank_states for episode_return in state["recent_returns"]]
                checkpoint = {
                    "args": vars(args),
                    "global_step": global_step,
                    "iteration": iteration,
                    "training_return": float(np.mean(returns)) if returns else float("nan"),
                    "q_network": q_network.state_dict(),
                    "target_network": target_network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "ranks": list(rank_states),
                }
                try:
                    if args.checkpoint_buffer:
                        save_atomic({"ranks": list(buffers)}, checkpoint_path.replace("step_", "buffer_"))
                    save_atomic(checkpoint, checkpoint_path)
                    for old_buffer in glob.glob(f"runs/{run_name}/checkpoints/buffer_*.pt"):  # only the latest is needed
                        if old_buffer != checkpoint_path.replace("step_", "buffer_"):
                            os.remove(old_buffer)
                except OSError as error:
                    print(
                        f"error: could not write {checkpoint_path} ({error}); the previous checkpoint is kept", file=sys.stderr
                    )
            recent_returns = []
            if stop:
                writer.close()
                envs.close()
                if world_size > 1:
                    dist.destroy_process_group()
                if rank == 0:
                    print(
                        f"stopped by {signal.Signals(stop).name} at step {global_step}: resume with --resume runs/{run_name}",
                        file=sys.stderr,
                    )
                sys.exit(128 + stop)

    if args.save_model and rank == 0:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        save_atomic(q_network.state_dict(), model_path)
        print(f"model saved to {model_path}")

    envs.close()
    writer.close()
    if world_size > 1:
        dist.destroy_process_group()
