# VLM-RM on MountainCarContinuous: CleanRL's SAC (https://docs.cleanrl.dev/rl-algorithms/sac/#sac_continuous_actionpy)
# taught by a CLIP reward computed from the rendered frame after every step.
# Run: python sac_clip_mountaincar.py --prompt "a car at the peak of the mountain, next to the yellow flag" --alpha 0.5
# Over 4 GPUs: torchrun --standalone --nproc-per-node 4 sac_clip_mountaincar.py ... (README, "Several GPUs: torchrun")
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
    """if toggled, cuda will be enabled by default (for both SAC and CLIP)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (pip install wandb)"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save the actor and Q networks into the `runs/{run_name}` folder"""
    checkpoint_frequency: int = 64000
    """write a checkpoint to `runs/{run_name}/checkpoints` every this many env steps (the authors' 64k), at the end,
    and on SIGTERM/SIGINT; 0: only at the end and on a signal"""
    checkpoint_buffer: bool = False
    """also write the replay buffer (~30 MB here) with each checkpoint, so that --resume continues exactly"""
    resume: Optional[str] = None
    """continue the run in this folder (runs/...) from its latest checkpoint, with its saved arguments, to its total steps"""

    # CLIP reward (VLM-RM)
    reward: Literal["clip", "ground-truth"] = "clip"
    """what the agent learns from: the CLIP reward of the rendered frame, or the environment's own reward"""
    prompt: tuple[str, ...] = (clip_envs.PROMPTS["mountaincar"][0],)
    """the task as a sentence (the goal prompt g); several prompts are embedded, normalised and averaged"""
    baseline_prompt: tuple[str, ...] = (clip_envs.PROMPTS["mountaincar"][1],)
    """the baseline prompt b describing the scene in general"""
    alpha: float = 0.5
    """goal-baseline regularisation strength in [0, 1]: 0 is the plain cosine reward, 1 keeps only the b->g direction"""
    clip_model: str = "ViT-g-14/laion2b_s34b_b88k"
    """open_clip model as ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path (default: the authors' config)"""
    clip_checkpoint: Optional[str] = None
    """local CLIP weights file for --clip-model ARCH (offline use)"""
    reward_batch_size: int = 64
    """the most frames CLIP embeds in one forward pass"""
    clip_precision: Optional[Literal["fp32", "fp16", "bf16"]] = None
    """CLIP's weights: default fp16 on a GPU (half the memory, under autocast), fp32 on a CPU"""
    textured: bool = True
    """the paper's scene: a landscape photo along the track and a car sprite; --no-textured keeps gymnasium's line drawing"""
    textures_dir: Optional[str] = None
    """a folder with any of the authors' mountain_car_background.png, mountain_car.png to use instead of the project's own"""

    # Algorithm specific arguments
    env_id: str = "MountainCarContinuous-v0"
    """the environment id of the task"""
    episode_length: int = 200
    """fixed episode length; reaching the flag parks the car there instead of ending the episode"""
    total_timesteps: int = 3000000
    """total timesteps of the experiments (summed over envs)"""
    num_envs: int = 4
    """the number of parallel game environments (the authors': one per GPU, 4 GPUs), shared out under torchrun; CLIP
    scores all of a process's frames in one call"""
    async_envs: bool = True
    """with --num-envs > 1, step and render the envs in worker processes (gymnasium's AsyncVectorEnv), all at once"""
    buffer_size: int = int(1e6)
    """the replay memory buffer size"""
    gamma: float = 0.9999
    """the discount factor gamma"""
    tau: float = 0.01
    """target smoothing coefficient"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    learning_starts: int = 75000
    """timestep to start learning"""
    train_frequency: int = 200
    """train every this many vector steps (independent of --num-envs)"""
    gradient_steps: int = 400
    """SAC updates (gradient steps) per training phase"""
    policy_lr: float = 1e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-4
    """the learning rate of the Q network and entropy coefficient optimizers"""
    policy_frequency: int = 1
    """the frequency of training policy (delayed); 1 updates the actor at every gradient step, as stable-baselines3 (the paper's SAC)"""
    target_network_frequency: int = 1  # Denis Yarats' implementation delays this by 2.
    """the frequency of updates for the target nerworks"""
    ent_coef: float = 0.1
    """SAC's entropy regularization coefficient (called alpha in the SAC paper; here alpha is the CLIP regularisation)"""
    autotune: bool = False
    """automatic tuning of the entropy coefficient (the paper fixed it at 0.1)"""
    hidden_size: int = 64
    """units in each of the two hidden layers of the actor and the Q networks"""


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


def make_env(env_id, seed, idx, capture_video, run_name, episode_length, textures, render):
    def thunk():
        env = clip_envs.make_mountaincar(env_id, episode_length, textures)
        if capture_video and idx == 0:
            env = clip_envs.RecordVideo(env, f"videos/{run_name}")  # gymnasium's, without a false "overwriting" warning
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = clip_envs.FrameInInfo(env, render)  # the frame after each step, rendered where the env runs
        env.action_space.seed(seed)
        return env

    return thunk


class ReplayBuffer:
    def __init__(self, size, obs_shape, action_shape, device):
        self.obs = np.zeros((size, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((size, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((size, *action_shape), dtype=np.float32)
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
class SoftQNetwork(nn.Module):
    def __init__(self, env, hidden_size=256):
        super().__init__()
        self.fc1 = nn.Linear(
            np.array(env.single_observation_space.shape).prod() + np.prod(env.single_action_space.shape), hidden_size
        )
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


LOG_STD_MAX = 2
LOG_STD_MIN = -5


class Actor(nn.Module):
    def __init__(self, env, hidden_size=256):
        super().__init__()
        self.fc1 = nn.Linear(np.array(env.single_observation_space.shape).prod(), hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc_mean = nn.Linear(hidden_size, np.prod(env.single_action_space.shape))
        self.fc_logstd = nn.Linear(hidden_size, np.prod(env.single_action_space.shape))
        # action rescaling
        self.register_buffer(
            "action_scale",
            torch.tensor((env.single_action_space.high - env.single_action_space.low) / 2.0, dtype=torch.float32),
        )
        self.register_buffer(
            "action_bias",
            torch.tensor((env.single_action_space.high + env.single_action_space.low) / 2.0, dtype=torch.float32),
        )

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = self.fc_logstd(x)
        log_std = torch.tanh(log_std)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # From SpinUp / Denis Yarats
        return mean, log_std

    def get_action(self, x):
        mean, log_std = self(x)
        std = log_std.exp()
        normal = torch.distributions.Normal(mean, std)
        x_t = normal.rsample()  # for reparameterization trick (mean + std * N(0,1))
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t)
        # Enforcing Action Bound
        log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        log_prob = log_prob.sum(1, keepdim=True)
        mean = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


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
        "policy_frequency",
        "train_frequency",
        "gradient_steps",
        "target_network_frequency",
        "hidden_size",
    )
    for name, (valid, rule) in {
        **{name: (getattr(args, name) >= 1, ">= 1") for name in counts},
        "gamma": (0 <= args.gamma <= 1, "in [0, 1]"),
        "tau": (0 < args.tau <= 1, "in (0, 1]"),
        "policy_lr": (0 < args.policy_lr < math.inf, "> 0 and finite"),
        "q_lr": (0 < args.q_lr < math.inf, "> 0 and finite"),
        "ent_coef": (0 <= args.ent_coef < math.inf, ">= 0 and finite"),
        "env_id": (args.env_id == "MountainCarContinuous-v0", "MountainCarContinuous-v0, on which the scene is built"),
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
    try:
        if args.textures_dir is not None and not args.textured:
            raise clip_envs.SceneError("--textures-dir needs the textured scene: drop --no-textured")
        textures = clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES, args.textures_dir) if args.textured else None
    except clip_envs.SceneError as error:
        sys.exit(f"error: {error}")
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
                textures,
                reward_model is not None,
            )
            for i in local_envs
        ]
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space is supported"

    actor = Actor(envs, args.hidden_size).to(device)
    qf1 = SoftQNetwork(envs, args.hidden_size).to(device)
    qf2 = SoftQNetwork(envs, args.hidden_size).to(device)
    qf1_target = SoftQNetwork(envs, args.hidden_size).to(device)
    qf2_target = SoftQNetwork(envs, args.hidden_size).to(device)
    if world_size > 1:  # every rank starts from rank 0's networks, and averaged gradients keep them equal
        for param in itertools.chain(actor.parameters(), qf1.parameters(), qf2.parameters()):
            dist.broadcast(param.data, src=0)
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=args.policy_lr)

    # Automatic entropy tuning
    if args.autotune:
        target_entropy = -torch.prod(torch.Tensor(envs.single_action_space.shape).to(device)).item()
        log_ent_coef = torch.zeros(1, requires_grad=True, device=device)
        ent_coef = log_ent_coef.exp().item()
        ent_coef_optimizer = optim.Adam([log_ent_coef], lr=args.q_lr)
    else:
        ent_coef = args.ent_coef

    rb = ReplayBuffer(
        math.ceil(args.buffer_size / world_size), envs.single_observation_space.shape, envs.single_action_space.shape, device
    )
    episode_clip_return = np.zeros(envs.num_envs)

    # TRY NOT TO MODIFY: start the game
    obs, _ = envs.reset(seed=args.seed + local_envs[0])
    # gymnasium's vector envs reset a finished env on the *next* step; that step is no transition.
    autoreset = np.zeros(envs.num_envs, dtype=bool)
    num_iterations = args.total_timesteps // args.num_envs
    num_updates = 0
    start_iteration, updates_start, checkpoint_due = 1, args.learning_starts, False
    recent_returns = (
        []
    )  # training returns (CLIP's unless --reward ground-truth) since the last checkpoint: evaluate.py picks the best checkpoint by them

    if checkpoint is not None:  # --resume: everything as the checkpoint left it
        for name, module in (
            ("actor", actor),
            ("qf1", qf1),
            ("qf2", qf2),
            ("qf1_target", qf1_target),
            ("qf2_target", qf2_target),
        ):
            module.load_state_dict(checkpoint[name])
        q_optimizer.load_state_dict(checkpoint["q_optimizer"])
        actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
        ent_coef = checkpoint["ent_coef"]
        if args.autotune:
            log_ent_coef.data.copy_(checkpoint["log_ent_coef"])
            ent_coef_optimizer.load_state_dict(checkpoint["ent_coef_optimizer"])
        rank_state = checkpoint["ranks"][rank]  # this process's envs, episodes in progress and random generators
        envs.set_attr("state_to_load", list(rank_state["envs"]))
        envs.call("load_checkpoint_state")
        envs.single_action_space.np_random.bit_generator.state = rank_state["action_space"]
        obs, autoreset, num_updates = rank_state["obs"], rank_state["autoreset"], checkpoint["num_updates"]
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
        if global_step < args.learning_starts:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            actions, _, _ = actor.get_action(torch.Tensor(obs).to(device))
            actions = actions.detach().cpu().numpy()

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, ground_truth_rewards, terminations, truncations, infos = envs.step(actions)

        # ============ VLM-RM: the CLIP reward of the frame each env shows after its step ============
        if reward_model is not None:
            frames = infos["frame"]  # (num_envs, 400, 600, 3) uint8; resized to CLIP's input inside
            clip_rewards = reward_model(frames).cpu().numpy()
            rewards = clip_rewards
            episode_clip_return += np.where(autoreset, 0.0, clip_rewards)
        else:
            rewards = ground_truth_rewards
        # ===========================================================================================

        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_return = infos["episode"]["r"][i]  # MountainCarContinuous's own reward: the ground truth
                success = float(next_obs[i, 0] >= clip_envs.GOAL_POSITION)  # the car ends the episode parked at the flag
                sps = int((global_step - start_step) / (time.time() - start_time))
                message = f"global_step={global_step}/{args.total_timesteps}, episodic_return={episodic_return:.1f}, success={success:.0f}"
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/success", success, global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
                if reward_model is not None:
                    writer.add_scalar("charts/episodic_clip_return", episode_clip_return[i], global_step)
                    message += f", clip_return={episode_clip_return[i]:.2f}"
                    recent_returns.append(episode_clip_return[i])
                    episode_clip_return[i] = 0.0
                else:
                    recent_returns.append(episodic_return)
                print(f"{message}, SPS={sps}")

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
        if global_step > updates_start and iteration % args.train_frequency == 0:
            for _ in range(args.gradient_steps):
                num_updates += 1
                data_obs, data_next_obs, data_actions, data_rewards, data_dones = rb.sample(args.batch_size // world_size)
                with torch.no_grad():
                    next_state_actions, next_state_log_pi, _ = actor.get_action(data_next_obs)
                    qf1_next_target = qf1_target(data_next_obs, next_state_actions)
                    qf2_next_target = qf2_target(data_next_obs, next_state_actions)
                    min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - ent_coef * next_state_log_pi
                    next_q_value = data_rewards + (1 - data_dones) * args.gamma * min_qf_next_target.view(-1)

                qf1_a_values = qf1(data_obs, data_actions).view(-1)
                qf2_a_values = qf2(data_obs, data_actions).view(-1)
                qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
                qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
                qf_loss = qf1_loss + qf2_loss

                # optimize the model
                q_optimizer.zero_grad()
                qf_loss.backward()
                average_gradients(q_optimizer.param_groups[0]["params"])
                q_optimizer.step()

                if num_updates % args.policy_frequency == 0:  # TD 3 Delayed update support
                    for _ in range(
                        args.policy_frequency
                    ):  # compensate for the delay by doing 'actor_update_interval' instead of 1
                        pi, log_pi, _ = actor.get_action(data_obs)
                        qf1_pi = qf1(data_obs, pi)
                        qf2_pi = qf2(data_obs, pi)
                        min_qf_pi = torch.min(qf1_pi, qf2_pi)
                        actor_loss = ((ent_coef * log_pi) - min_qf_pi).mean()

                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        average_gradients(actor_optimizer.param_groups[0]["params"])
                        actor_optimizer.step()

                        if args.autotune:
                            with torch.no_grad():
                                _, log_pi, _ = actor.get_action(data_obs)
                            ent_coef_loss = (-log_ent_coef.exp() * (log_pi + target_entropy)).mean()

                            ent_coef_optimizer.zero_grad()
                            ent_coef_loss.backward()
                            average_gradients([log_ent_coef])
                            ent_coef_optimizer.step()
                            ent_coef = log_ent_coef.exp().item()

                # update the target networks
                if num_updates % args.target_network_frequency == 0:
                    for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                        target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
                    for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                        target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)

                if num_updates % 100 == 0:
                    writer.add_scalar("losses/qf1_values", qf1_a_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf2_values", qf2_a_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf1_loss", qf1_loss.item(), global_step)
                    writer.add_scalar("losses/qf2_loss", qf2_loss.item(), global_step)
                    writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                    writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                    writer.add_scalar("losses/ent_coef", ent_coef, global_step)
                    writer.add_scalar("charts/SPS", int((global_step - start_step) / (time.time() - start_time)), global_step)
                    if args.autotune:
                        writer.add_scalar("losses/ent_coef_loss", ent_coef_loss.item(), global_step)

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
                    "num_updates": num_updates,
                    "training_return": float(np.mean(returns)) if returns else float("nan"),
                    "actor": actor.state_dict(),
                    "qf1": qf1.state_dict(),
                    "qf2": qf2.state_dict(),
                    "qf1_target": qf1_target.state_dict(),
                    "qf2_target": qf2_target.state_dict(),
                    "q_optimizer": q_optimizer.state_dict(),
                    "actor_optimizer": actor_optimizer.state_dict(),
                    "ent_coef": ent_coef,
                    "log_ent_coef": log_ent_coef.detach() if args.autotune else None,
                    "ent_coef_optimizer": ent_coef_optimizer.state_dict() if args.autotune else None,
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
        save_atomic((actor.state_dict(), qf1.state_dict(), qf2.state_dict()), model_path)
        print(f"model saved to {model_path}")

    envs.close()
    writer.close()
    if world_size > 1:
        dist.destroy_process_group()
