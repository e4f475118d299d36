# VLM-RM on CartPole: CleanRL's DQN (https://docs.cleanrl.dev/rl-algorithms/dqn/#dqnpy)
# taught by a CLIP reward computed from the rendered frame after every step. Docs: docs/dqn_clip_cartpole.md
# Run: python dqn_clip_cartpole.py --prompt "pole vertically upright on top of the cart"
import math
import os
import random
from dataclasses import dataclass
from typing import Literal, Optional

# torch's OpenMP threads sleep between ops instead of spinning: ~8x faster when runs, tests or env workers share the cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro

import clip_envs
import clip_reward
import run_utils


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
    """checkpoint every this many env steps (the authors' 64k; 0: never), at the end and on SIGTERM/SIGINT"""
    checkpoint_buffer: bool = False
    """also write the replay buffer (~16 MB here) with each checkpoint, so that --resume continues exactly"""
    resume: Optional[str] = None
    """continue the run in this folder (runs/...) from its latest checkpoint, with its saved arguments, to its total steps"""
    image_frequency: int = 10000
    """every this many env steps, TensorBoard gets the frames with the highest and lowest CLIP reward since the last
    (images/*) and the rewards' histogram (0: never)"""

    # CLIP reward (VLM-RM)
    reward: Literal["clip", "ground-truth"] = "clip"
    """what the agent learns from: the CLIP reward of the rendered frame, or CartPole's own reward (to check the DQN)"""
    prompt: tuple[str, ...] = (clip_envs.PROMPTS["cartpole"][0],)
    """the task as a sentence (the goal prompt g); several prompts are embedded, normalised and averaged"""
    baseline_prompt: tuple[str, ...] = (clip_envs.PROMPTS["cartpole"][1],)
    """the baseline prompt b describing the scene in general; only used when alpha > 0"""
    alpha: float = 0.0
    """goal-baseline regularisation strength in [0, 1]: 0 the plain cosine reward (enough for CartPole), 1 only along b->g"""
    clip_model: str = "ViT-B-32/laion2b_s34b_b79k"
    """open_clip model: ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path; default: a small CLIP, enough here"""
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
    """the number of parallel game environments (shared out under torchrun); CLIP scores each step's frames in one call"""
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


ARG_RULES = {  # every argument and what it may be, checked before any work (run_utils.check_args)
    **run_utils.COMMON_RULES,
    "learning_rate": run_utils.POSITIVE_FINITE,
    "start_e": run_utils.in_range(0, 1),
    "end_e": run_utils.in_range(0, 1),
    "exploration_fraction": run_utils.in_range(0, 1, open_low=True),
    "env_id": run_utils.Rule(lambda value, args: value in ("CartPole-v1", "CartPole-v0"), "CartPole-v1 or CartPole-v0"),
    "buffer_size": run_utils.fits_in_memory(2 * 4 + 1 + 2),  # observation, next observation, action, reward, done
}


def make_env(env_id, seed, idx, capture_video, run_name, render, **scene):
    def thunk():
        env = clip_envs.make_cartpole(env_id, render=render or capture_video, **scene)
        if capture_video and idx == 0:
            env = clip_envs.RecordVideo(env, f"videos/{run_name}")  # gymnasium's, without a false "overwriting" warning
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = clip_envs.FrameInInfo(env, render)  # the frame after each step, rendered where the env runs
        env.action_space.seed(seed)
        return env

    return thunk


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
    rank, world_size = run_utils.torchrun_rank()  # under torchrun, this process's share of the run (docs/multi_gpu.md)
    args, checkpoint = run_utils.resume(args)  # --resume: the run's own arguments, and its latest checkpoint
    run_utils.check_args(args, ARG_RULES, world_size)
    stop = run_utils.StopOnSignal()  # SIGTERM / SIGINT: a checkpoint after the current step, then the run ends

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed + rank)  # each torchrun process explores with random numbers of its own
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = run_utils.init_device(args.cuda)

    # ============ VLM-RM: the reward model, CLIP with the embedded prompts (the math: clip_reward.py) ============
    reward_model = None
    if args.reward == "clip":
        with run_utils.exit_on_bad_input():
            reward_model = clip_reward.load_reward_model(
                args.clip_model, target_prompts=args.prompt, baseline_prompts=args.baseline_prompt, alpha=args.alpha,
                checkpoint=args.clip_checkpoint, device=device, batch_size=args.reward_batch_size,
                precision=args.clip_precision,
            )  # fmt: skip
    # ==============================================================================================================

    run_name, writer = run_utils.open_run(args, device, checkpoint, reward_model)  # made once nothing can fail

    # env setup: under torchrun each rank runs its share of the run's envs (their seeds and video as in one process)
    local_envs, render = run_utils.local_envs(args.num_envs), reward_model is not None
    scene = dict(episode_length=args.episode_length)
    env_fns = [make_env(args.env_id, args.seed + i, i, args.capture_video, run_name, render, **scene) for i in local_envs]
    envs = run_utils.vector_env(env_fns, args.async_envs)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"

    q_network = QNetwork(envs, args.hidden_sizes).to(device)
    optimizer = optim.Adam(q_network.parameters(), lr=args.learning_rate)
    target_network = QNetwork(envs, args.hidden_sizes).to(device)
    run_utils.broadcast_parameters(q_network)  # every torchrun process starts from rank 0's network
    target_network.load_state_dict(q_network.state_dict())

    rb = run_utils.ReplayBuffer(
        math.ceil(args.buffer_size / world_size), envs.single_observation_space, envs.single_action_space, device
    )
    # what a checkpoint holds besides the envs, the replay buffer and the random generators
    saved = dict(q_network=q_network, target_network=target_network, optimizer=optimizer)
    saved["reward_window"] = reward_window = run_utils.RewardWindow(writer, args.image_frequency)  # CLIP's best, worst frames
    checkpoints = run_utils.Checkpoints(run_name, args, envs, rb, writer, stop, saved)

    # TRY NOT TO MODIFY: start the game
    obs, _ = envs.reset(seed=args.seed + local_envs[0])
    autoreset = np.zeros(envs.num_envs, dtype=bool)  # a finished env resets on the *next* step, which is no transition
    episode_sums = {"clip_return": np.zeros(envs.num_envs)}  # what each env's episode in progress has summed so far
    num_iterations = args.total_timesteps // args.num_envs
    start_iteration, updates_start = 1, args.learning_starts
    if checkpoint is not None:  # --resume: everything as the checkpoint left it
        loop = checkpoints.restore(checkpoint)
        obs, autoreset, episode_sums = loop["obs"], loop["autoreset"], loop["episode_sums"]
        updates_start, start_iteration = loop["updates_start"], checkpoint["iteration"] + 1
    progress = run_utils.Progress(args.total_timesteps, (start_iteration - 1) * args.num_envs)

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
            rewards, along, off = reward_model.score(frames)
            rewards = rewards.cpu().numpy()
            episode_sums["clip_return"] += np.where(autoreset, 0.0, rewards)
            reward_window.add(
                frames, rewards, along, off, task=ground_truth_rewards > 0, keep=~autoreset
            )  # what CLIP pays for
            reward_window.write_if_due(global_step)
        else:
            rewards = ground_truth_rewards
        # ===========================================================================================

        # Success: the pole within 12 degrees of upright (CartPole's reward here) on at least half of the episode's steps
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_return, length = infos["episode"]["r"][i], infos["episode"]["l"][i]
                task_fraction, clip_return = episodic_return / length, episode_sums["clip_return"][i]
                success = float(task_fraction >= 0.5)
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
                writer.add_scalar("charts/task_fraction", task_fraction, global_step)
                writer.add_scalar("charts/success", success, global_step)
                if reward_model is not None:
                    writer.add_scalar("charts/episodic_clip_return", clip_return, global_step)
                learned = dict(clip_return=clip_return) if reward_model is not None else dict(episodic_return=episodic_return)
                progress.episode(**learned, success=success)
                checkpoints.record_return(*learned.values())  # the return of the reward learned from ranks the checkpoints
                for sums in episode_sums.values():  # the env's next episode starts from zero
                    sums[i] = 0.0
            run_utils.upload_videos(run_name, writer, global_step)  # --capture-video's: TensorBoard, and wandb with --track
        progress.update(global_step)

        # save data to reply buffer: a transition per env, none for the step that resets a finished episode
        for i in np.flatnonzero(~autoreset):
            rb.add(obs[i], next_obs[i], actions[i], rewards[i], terminations[i])
        autoreset = np.logical_or(terminations, truncations)

        # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
        obs = next_obs

        # ALGO LOGIC: training.
        if global_step > updates_start:
            if iteration % args.train_frequency == 0:
                for _ in range(args.gradient_steps):
                    data = rb.sample(args.batch_size // world_size)
                    with torch.no_grad():
                        target_max, _ = target_network(data.next_observations).max(dim=1)
                        td_target = data.rewards.flatten() + args.gamma * target_max * (1 - data.dones.flatten())
                    old_val = q_network(data.observations).gather(1, data.actions).squeeze(1)
                    loss = F.mse_loss(td_target, old_val)

                    # optimize the model
                    optimizer.zero_grad()
                    loss.backward()
                    run_utils.average_gradients(q_network.parameters())  # under torchrun: the mean over the processes
                    optimizer.step()

                if iteration % 100 == 0:
                    writer.add_scalar("losses/td_loss", loss.item(), global_step)
                    writer.add_scalar("losses/q_values", old_val.mean().item(), global_step)
                    writer.add_scalar("charts/epsilon", epsilon, global_step)
                    writer.add_scalar("charts/SPS", progress.sps(global_step), global_step)

            # update target network
            if iteration % args.target_network_frequency == 0:
                for target_network_param, q_network_param in zip(target_network.parameters(), q_network.parameters()):
                    target_network_param.data.copy_(
                        args.tau * q_network_param.data + (1.0 - args.tau) * target_network_param.data
                    )

        # A checkpoint every --checkpoint-frequency env steps, at the end, and on SIGTERM / SIGINT (the run then ends here)
        if checkpoints.due(global_step, iteration == num_iterations, autoreset):
            checkpoints.save(global_step, iteration, obs=obs, autoreset=autoreset, episode_sums=episode_sums)
    progress.close()

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        run_utils.save_model(q_network.state_dict(), model_path)

    envs.close()
    writer.close()
    run_utils.end_processes()
