# VLM-RM on any gymnasium env with continuous actions: CleanRL's SAC
# (https://docs.cleanrl.dev/rl-algorithms/sac/#sac_continuous_actionpy) taught by a CLIP reward computed from the rendered
# frame after every step. Docs: docs/your_own_environment.md
# Run: python sac_clip_continuous_action.py --env-id Pendulum-v1 --prompt "a pendulum pointing straight up"
import math
import os
import random
import sys
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
    """if toggled, cuda will be enabled by default (for both SAC and CLIP)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (pip install wandb)"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder), at the env's own frame size"""
    save_model: bool = False
    """whether to save the actor and Q networks into the `runs/{run_name}` folder"""
    checkpoint_frequency: int = 100000
    """checkpoint every this many env steps (0: never), at the end and on SIGTERM/SIGINT"""
    checkpoint_buffer: bool = False
    """also write the replay buffer with each checkpoint, so that --resume continues exactly"""
    resume: Optional[str] = None
    """continue the run in this folder (runs/...) from its latest checkpoint, with its saved arguments, to its total steps"""
    image_frequency: int = 10000
    """every this many env steps, TensorBoard gets the frames with the highest and lowest CLIP reward since the last
    (images/*), the rewards' histogram and their correlation with the env's own reward (0: never)"""

    # CLIP reward (VLM-RM)
    reward: Literal["clip", "env"] = "clip"
    """what the agent learns from: the CLIP reward of the rendered frame, or the env's own reward (the reference)"""
    prompt: Optional[tuple[str, ...]] = None
    """the task as a sentence, the goal prompt g ("a pendulum pointing straight up"; several are averaged); or --task's"""
    baseline_prompt: Optional[tuple[str, ...]] = None
    """the baseline prompt b describing the scene in general (e.g. "a pendulum"); needed when alpha > 0; default: --task's"""
    alpha: float = 0.0
    """goal-baseline regularisation strength in [0, 1]: 0 the plain cosine reward, 1 only the b->g direction"""
    task: Optional[Literal[tuple(clip_envs.ENV_TASKS)]] = None
    """a goal whose success the script can check on the env's observation (clip_envs.ENV_TASKS; --env-id must be its
    env): it sets the prompts unless given and logs charts/success; without it a run has no automatic success"""
    clip_model: str = "ViT-bigG-14/laion2b_s39b_b160k"
    """open_clip model: ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path; default: the paper's humanoid CLIP"""
    clip_checkpoint: Optional[str] = None
    """local CLIP weights file for --clip-model ARCH (offline use)"""
    reward_batch_size: int = 64
    """the most frames CLIP embeds in one forward pass"""
    clip_precision: Optional[Literal["fp32", "fp16", "bf16"]] = None
    """CLIP's weights: default fp16 on a GPU (half the memory, under autocast), fp32 on a CPU"""
    render_size: Optional[int] = None
    """resize each frame whole to this many pixels square where the env runs, before it crosses to the trainer
    (CLIP's own preprocessing would); default: the env's own frame"""

    # Algorithm specific arguments
    env_id: str = "Pendulum-v1"
    """the environment id of the task: any registered gymnasium env with a Box action space and rgb_array render
    ("module:Env-v0" imports the module that registers it)"""
    total_timesteps: int = 1000000
    """total timesteps of the experiments (summed over envs)"""
    num_envs: int = 4
    """the number of parallel game environments (shared out under torchrun); CLIP scores each step's frames in one call"""
    async_envs: bool = True
    """with --num-envs > 1, step and render the envs in worker processes (gymnasium's AsyncVectorEnv), all at once"""
    buffer_size: int = int(1e6)
    """the replay memory buffer size"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient (default: 0.005)"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    learning_starts: int = 5000
    """timestep to start learning"""
    train_frequency: int = 1
    """train every this many vector steps (independent of --num-envs)"""
    gradient_steps: int = 1
    """SAC updates (gradient steps) per training phase"""
    policy_lr: float = 3e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-3
    """the learning rate of the Q network and entropy coefficient optimizers"""
    policy_frequency: int = 2
    """the frequency of training policy (delayed)"""
    target_network_frequency: int = 1  # Denis Yarats' implementation delays this by 2.
    """the frequency of updates for the target nerworks"""
    ent_coef: float = 0.2
    """SAC's entropy regularization coefficient (called alpha in the SAC paper; here alpha is the CLIP regularisation)"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""
    center_rewards: bool = False
    """subtract each batch's mean reward in the critic's target (for envs whose episodes end only by a time limit)"""
    hidden_sizes: tuple[int, int] = (256, 256)
    """units in the two hidden layers of the actor and the Q networks (CleanRL's 256 256)"""


ARG_RULES = {  # every argument and what it may be, checked before any work (run_utils.check_args)
    **{name: rule for name, rule in run_utils.SAC_RULES.items() if name != "episode_length"},  # the env ends episodes
    "render_size": run_utils.at_least(8),
    "prompt": run_utils.Rule(lambda value, args: value is not None or args.task is not None or args.reward == "env",
                             "given (the task as a sentence), or a --task to take it from"),
    "alpha": run_utils.Rule(lambda value, args: 0 <= value <= 1 and (value == 0 or args.baseline_prompt or args.task),
                            "in [0, 1], and > 0 only with a --baseline-prompt (or a --task's)"),
    "env_id": run_utils.Rule(lambda value, args: args.task is None or value == clip_envs.ENV_TASKS[args.task].env_id,
                             "the --task's env"),
}  # fmt: skip


def make_env(env_id, seed, idx, capture_video, run_name, render, render_size):
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array")
        if capture_video and idx == 0:
            env = clip_envs.RecordVideo(env, f"videos/{run_name}")  # gymnasium's, without a false "overwriting" warning
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = clip_envs.FrameInInfo(env, render, render_size)  # the frame after each step, rendered and resized there
        env.action_space.seed(seed)
        return env

    return thunk


# ALGO LOGIC: initialize agent here:
class SoftQNetwork(nn.Module):
    def __init__(self, env, hidden_sizes=(256, 256)):
        super().__init__()
        self.fc1 = nn.Linear(
            np.array(env.single_observation_space.shape).prod() + np.prod(env.single_action_space.shape), hidden_sizes[0]
        )
        self.fc2 = nn.Linear(hidden_sizes[0], hidden_sizes[1])
        self.fc3 = nn.Linear(hidden_sizes[1], 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


LOG_STD_MAX = 2
LOG_STD_MIN = -5


class Actor(nn.Module):
    def __init__(self, env, hidden_sizes=(256, 256)):
        super().__init__()
        self.fc1 = nn.Linear(np.array(env.single_observation_space.shape).prod(), hidden_sizes[0])
        self.fc2 = nn.Linear(hidden_sizes[0], hidden_sizes[1])
        self.fc_mean = nn.Linear(hidden_sizes[1], np.prod(env.single_action_space.shape))
        self.fc_logstd = nn.Linear(hidden_sizes[1], np.prod(env.single_action_space.shape))
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
    rank, world_size = run_utils.torchrun_rank()  # under torchrun, this process's share of the run (docs/multi_gpu.md)
    args, checkpoint = run_utils.resume(args)  # --resume: the run's own arguments, and its latest checkpoint
    run_utils.check_args(args, ARG_RULES, world_size)
    task = clip_envs.ENV_TASKS[args.task] if args.task is not None else None
    if args.reward == "env" and (args.prompt or args.render_size) and rank == 0:
        print("warning: --reward env learns from the env's own reward: --prompt and --render-size do nothing", file=sys.stderr)
    if task is not None:  # the task's prompts unless given
        args.prompt, args.baseline_prompt = args.prompt or (task.prompt,), args.baseline_prompt or (task.baseline_prompt,)
    with run_utils.exit_on_bad_input():  # an env SAC or CLIP cannot use: one line, no traceback
        clip_envs.check_env(args.env_id, args.render_size)  # makes and renders it in a process of its own
    run_utils.say_how_success_is_judged(args, task and f"the goal holds ({task.goal}) on at least half of an episode's steps")
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
                args.clip_model, target_prompts=args.prompt, baseline_prompts=args.baseline_prompt or args.prompt,
                alpha=args.alpha, checkpoint=args.clip_checkpoint, device=device, batch_size=args.reward_batch_size,
                precision=args.clip_precision,
            )  # fmt: skip
    # ==============================================================================================================

    run_name, writer = run_utils.open_run(args, device, checkpoint, reward_model)  # made once nothing can fail

    # env setup: under torchrun each rank runs its share of the run's envs (their seeds and video as in one process)
    local_envs, render = run_utils.local_envs(args.num_envs), reward_model is not None
    with run_utils.exit_on_bad_input():
        env_fns = [
            make_env(args.env_id, args.seed + i, i, args.capture_video, run_name, render, args.render_size) for i in local_envs
        ]
        envs = run_utils.vector_env(env_fns, args.async_envs)
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space is supported"

    actor = Actor(envs, args.hidden_sizes).to(device)
    qf1 = SoftQNetwork(envs, args.hidden_sizes).to(device)
    qf2 = SoftQNetwork(envs, args.hidden_sizes).to(device)
    qf1_target = SoftQNetwork(envs, args.hidden_sizes).to(device)
    qf2_target = SoftQNetwork(envs, args.hidden_sizes).to(device)
    run_utils.broadcast_parameters(actor, qf1, qf2)  # every torchrun process starts from rank 0's networks
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=args.policy_lr)
    saved = dict(actor=actor, qf1=qf1, qf2=qf2, qf1_target=qf1_target, qf2_target=qf2_target)
    saved.update(q_optimizer=q_optimizer, actor_optimizer=actor_optimizer)  # a checkpoint's; envs, buffer, RNGs: its own

    # Automatic entropy tuning
    if args.autotune:
        target_entropy = -torch.prod(torch.Tensor(envs.single_action_space.shape).to(device)).item()
        log_ent_coef = torch.zeros(1, requires_grad=True, device=device)
        ent_coef = log_ent_coef.exp().item()
        ent_coef_optimizer = optim.Adam([log_ent_coef], lr=args.q_lr)
        saved.update(log_ent_coef=log_ent_coef, ent_coef_optimizer=ent_coef_optimizer)
    else:
        ent_coef = args.ent_coef

    rb = run_utils.ReplayBuffer(
        math.ceil(args.buffer_size / world_size), envs.single_observation_space, envs.single_action_space, device
    )
    saved["reward_window"] = reward_window = run_utils.RewardWindow(writer, args.image_frequency)  # CLIP's best, worst frames
    checkpoints = run_utils.Checkpoints(run_name, args, envs, rb, writer, stop, saved)

    # TRY NOT TO MODIFY: start the game
    obs, _ = envs.reset(seed=args.seed + local_envs[0])
    autoreset = np.zeros(envs.num_envs, dtype=bool)  # a finished env resets on the *next* step, which is no transition
    episode_sums = {"clip_return": np.zeros(envs.num_envs), "goal_steps": np.zeros(envs.num_envs)}
    num_iterations = args.total_timesteps // args.num_envs
    start_iteration, updates_start, num_updates = 1, args.learning_starts, 0
    if checkpoint is not None:  # --resume: everything as the checkpoint left it
        loop = checkpoints.restore(checkpoint)
        obs, autoreset, episode_sums, num_updates = loop["obs"], loop["autoreset"], loop["episode_sums"], loop["num_updates"]
        updates_start, start_iteration = loop["updates_start"], checkpoint["iteration"] + 1
        ent_coef = log_ent_coef.exp().item() if args.autotune else args.ent_coef
    progress = run_utils.Progress(args.total_timesteps, (start_iteration - 1) * args.num_envs)

    for iteration in range(start_iteration, num_iterations + 1):
        global_step = iteration * args.num_envs
        # ALGO LOGIC: put action logic here
        if global_step < args.learning_starts:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            actions, _, _ = actor.get_action(torch.Tensor(obs).to(device))
            actions = actions.detach().cpu().numpy()

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, env_rewards, terminations, truncations, infos = envs.step(actions)
        goal_holds = task.holds(next_obs) if task is not None else None

        # ============ VLM-RM: the CLIP reward of the frame each env shows after its step ============
        if reward_model is not None:
            frames = infos["frame"]  # (num_envs, H, W, 3) uint8 (square with --render-size); resized to CLIP's input inside
            rewards, along, off = reward_model.score(frames)
            rewards = rewards.cpu().numpy()
            episode_sums["clip_return"] += np.where(autoreset, 0.0, rewards)
            reward_window.add(
                frames, rewards, along, off, task=goal_holds, keep=~autoreset, env_rewards=env_rewards
            )  # what CLIP pays for, and how it tracks the env's own reward
            reward_window.write_if_due(global_step)
        else:
            rewards = env_rewards
        # ===========================================================================================

        # Success, only for a --task: its goal holds on at least half of the episode's steps (the paper's rule)
        if task is not None:
            episode_sums["goal_steps"] += np.where(autoreset, 0.0, goal_holds)
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_return, length = infos["episode"]["r"][i], infos["episode"]["l"][i]  # the env's own reward
                clip_return = episode_sums["clip_return"][i]
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
                judged = {}
                if task is not None:
                    task_fraction = episode_sums["goal_steps"][i] / length
                    judged = dict(task_fraction=task_fraction, success=float(task_fraction >= 0.5))
                    writer.add_scalar("charts/task_fraction", task_fraction, global_step)
                    writer.add_scalar("charts/success", judged["success"], global_step)
                if reward_model is not None:
                    writer.add_scalar("charts/episodic_clip_return", clip_return, global_step)
                learned = dict(clip_return=clip_return) if reward_model is not None else dict(episodic_return=episodic_return)
                progress.episode(**learned, **judged)
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
        if global_step > updates_start and iteration % args.train_frequency == 0:
            for _ in range(args.gradient_steps):
                num_updates += 1
                data = rb.sample(args.batch_size // world_size)
                with torch.no_grad():
                    next_state_actions, next_state_log_pi, _ = actor.get_action(data.next_observations)
                    qf1_next_target = qf1_target(data.next_observations, next_state_actions)
                    qf2_next_target = qf2_target(data.next_observations, next_state_actions)
                    min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - ent_coef * next_state_log_pi
                    batch_rewards = data.rewards.flatten() - (data.rewards.mean() if args.center_rewards else 0.0)
                    next_q_value = batch_rewards + (1 - data.dones.flatten()) * args.gamma * min_qf_next_target.view(-1)

                qf1_a_values = qf1(data.observations, data.actions).view(-1)
                qf2_a_values = qf2(data.observations, data.actions).view(-1)
                qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
                qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
                qf_loss = qf1_loss + qf2_loss

                # optimize the model
                q_optimizer.zero_grad()
                qf_loss.backward()
                run_utils.average_gradients(q_optimizer.param_groups[0]["params"])  # under torchrun: the mean over processes
                q_optimizer.step()

                if num_updates % args.policy_frequency == 0:  # TD 3 Delayed update support
                    for _ in range(args.policy_frequency):  # compensate for the delay: policy_frequency updates at once
                        pi, log_pi, _ = actor.get_action(data.observations)
                        qf1_pi = qf1(data.observations, pi)
                        qf2_pi = qf2(data.observations, pi)
                        min_qf_pi = torch.min(qf1_pi, qf2_pi)
                        actor_loss = ((ent_coef * log_pi) - min_qf_pi).mean()

                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        run_utils.average_gradients(actor_optimizer.param_groups[0]["params"])
                        actor_optimizer.step()

                        if args.autotune:
                            with torch.no_grad():
                                _, log_pi, _ = actor.get_action(data.observations)
                            ent_coef_loss = (-log_ent_coef.exp() * (log_pi + target_entropy)).mean()

                            ent_coef_optimizer.zero_grad()
                            ent_coef_loss.backward()
                            run_utils.average_gradients([log_ent_coef])
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
                    writer.add_scalar("charts/SPS", progress.sps(global_step), global_step)
                    if args.autotune:
                        writer.add_scalar("losses/ent_coef_loss", ent_coef_loss.item(), global_step)

        # A checkpoint every --checkpoint-frequency env steps, at the end, and on SIGTERM / SIGINT (the run then ends here)
        if checkpoints.due(global_step, iteration == num_iterations, autoreset):
            checkpoints.save(
                global_step, iteration, obs=obs, autoreset=autoreset, episode_sums=episode_sums, num_updates=num_updates
            )
    progress.close()

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        run_utils.save_model((actor.state_dict(), qf1.state_dict(), qf2.state_dict()), model_path)

    envs.close()
    writer.close()
    run_utils.end_processes()
