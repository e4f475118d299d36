# VLM-RM on the MuJoCo Humanoid: CleanRL's SAC (https://docs.cleanrl.dev/rl-algorithms/sac/#sac_continuous_actionpy)
# taught a pose from one sentence by a CLIP reward on the rendered frame after every step. Docs: docs/sac_clip_humanoid.md
# Run: python sac_clip_humanoid.py --task kneeling --alpha 0.5
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
    checkpoint_frequency: int = 128000
    """checkpoint every this many env steps (the paper's 128k; 0: never), at the end and on SIGTERM/SIGINT"""
    checkpoint_buffer: bool = False
    """also write the replay buffer (up to ~3 GB here) with each checkpoint, so that --resume continues exactly"""
    resume: Optional[str] = None
    """continue the run in this folder (runs/...) from its latest checkpoint, with its saved arguments, to its total steps"""
    image_frequency: int = 50000
    """every this many env steps, TensorBoard gets the highest- and lowest-reward frames and their histogram (0: never)"""

    # CLIP reward (VLM-RM)
    reward: Literal["clip", "ground-truth"] = "clip"
    """what SAC learns from: the CLIP reward of the frame, or the task's ground-truth score of the state (no render)"""
    task: Optional[Literal[tuple(clip_envs.HUMANOID_TASKS)]] = None
    """one of the paper's eight tasks: its Table 3 prompt and automatic success; default kneeling unless --prompt is given"""
    prompt: Optional[tuple[str, ...]] = None
    """the goal prompt g (several are averaged); without --task a new sentence, which has no automatic success"""
    baseline_prompt: tuple[str, ...] = (clip_envs.PROMPTS["humanoid"][1],)
    """the baseline prompt b describing the scene in general; only used when alpha > 0"""
    alpha: float = 0.0
    """goal-baseline regularisation strength in [0, 1]: 0 the plain cosine reward (the paper's Table 1), 1 only along b->g"""
    clip_model: str = "ViT-bigG-14/laion2b_s39b_b160k"
    """open_clip model: ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path; default: the paper's"""
    clip_checkpoint: Optional[str] = None
    """local CLIP weights file for --clip-model ARCH (offline use)"""
    reward_batch_size: int = 64
    """the most frames CLIP embeds in one forward pass"""
    clip_precision: Optional[Literal["fp32", "fp16", "bf16"]] = None
    """CLIP's weights: default fp16 on a GPU (half the memory, under autocast), fp32 on a CPU"""
    textured: bool = True
    """the paper's scene (metallic robot, cloudy sky, slate floor, shadows); --no-textured keeps gymnasium's look"""
    textures_dir: Optional[str] = None
    """a folder with any of the authors' sky.png, tiles.png, robot.png to use instead of the project's own"""
    camera: tuple[float, float, float, float] = clip_envs.PAPER_CAMERA
    """the free camera: DISTANCE ELEVATION AZIMUTH LOOKAT_HEIGHT (metres, degrees); the paper's is frontal, a little above"""
    camera_follow: bool = False
    """move the camera's look-at point with the torso across the floor (the paper's camera stays fixed)"""
    render_size: int = clip_envs.RENDER_SIZE
    """frames are rendered this many pixels square (the videos' size), then resized to CLIP's input"""
    render_quality: Optional[tuple[int, int]] = None
    """MuJoCo's shadow map size and multisamples, e.g. 512 0 for CPU experiments; default: MuJoCo's 4096 4, the paper's"""

    # Algorithm specific arguments
    env_id: str = "Humanoid-v5"
    """the environment id of the task"""
    episode_length: int = 100
    """fixed episode length; the humanoid may fall or kneel without ending the episode"""
    total_timesteps: int = 10000000
    """total timesteps of the experiments (summed over envs)"""
    num_envs: int = 32
    """the number of parallel game environments (shared out under torchrun); CLIP scores each step's frames in one call"""
    async_envs: bool = True
    """with --num-envs > 1, step and render the envs in worker processes (gymnasium's AsyncVectorEnv), all at once"""
    buffer_size: int = int(1e6)
    """the replay memory buffer size"""
    gamma: float = 0.95
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient (default: 0.005)"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    learning_starts: int = 50000
    """timestep to start learning"""
    train_frequency: int = 100
    """train every this many vector steps (independent of --num-envs)"""
    gradient_steps: int = 100
    """SAC updates (gradient steps) per training phase; the paper: 100 every 100 vector steps of 32 envs"""
    policy_lr: float = 6e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 6e-4
    """the learning rate of the Q network and entropy coefficient optimizers"""
    policy_frequency: int = 1
    """the frequency of training policy (delayed); 1: the actor updates at every gradient step, as in the paper's SB3 SAC"""
    target_network_frequency: int = 1  # Denis Yarats' implementation delays this by 2.
    """the frequency of updates for the target nerworks"""
    ent_coef: float = 0.2
    """SAC's entropy regularization coefficient (called alpha in the SAC paper; here alpha is the CLIP regularisation)"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""
    center_rewards: bool = False
    """subtract each batch's mean reward in the critic's target (no episode ends early: the same best policy)"""
    hidden_sizes: tuple[int, int] = (256, 256)
    """units in the two hidden layers of the actor and the Q networks (the paper's 256 256)"""


ARG_RULES = {  # every argument and what it may be, checked before any work (run_utils.check_args)
    **run_utils.SAC_RULES,
    "render_size": run_utils.in_range(32, 4096),  # below 32 px the body is a few pixels: no pose left to see
    "render_quality": run_utils.RENDER_QUALITY,
    "buffer_size": run_utils.fits_in_memory(2 * 348 + 17 + 2),  # observation, next observation, action, reward, done
    "env_id": run_utils.Rule(lambda value, args: value == "Humanoid-v5", "Humanoid-v5, for which the tasks are built"),
    "reward": run_utils.Rule(lambda v, a: v == "clip" or bool(a.task or not a.prompt), "clip for a --prompt alone"),
}


def make_env(env_id, seed, idx, capture_video, run_name, render, **scene):
    def thunk():
        env = clip_envs.make_humanoid(env_id, **scene)
        if capture_video and idx == 0:
            env = clip_envs.RecordVideo(env, f"videos/{run_name}")  # gymnasium's, without a false "overwriting" warning
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = clip_envs.FrameInInfo(env, render)  # the frame after each step, rendered where the env runs
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
    args.task = args.task or (None if args.prompt else "kneeling")  # a new sentence has no predicate to judge it by
    args.prompt = args.prompt or (clip_envs.HUMANOID_TASKS[args.task],)  # the task's Table 3 prompt unless --prompt is given
    run_utils.say_how_success_is_judged(args, args.task and f"the {args.task} predicate holds on half an episode or more")
    with run_utils.exit_on_bad_input():  # a scene that cannot be built as asked: one line, no traceback
        clip_envs.check_camera(args.camera)
        clip_envs.check_mujoco_gl()  # draws a test frame in a process of its own
        textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, args.textures_dir, args.textured)
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
            reward_model = clip_reward.load_reward_model(  # the model, goal prompts, baseline prompts and alpha
                args.clip_model, args.prompt, args.baseline_prompt, args.alpha, checkpoint=args.clip_checkpoint, device=device,
                batch_size=args.reward_batch_size, precision=args.clip_precision,
            )  # fmt: skip
    # ==============================================================================================================

    run_name, writer = run_utils.open_run(args, device, checkpoint, reward_model)  # made once nothing can fail

    # env setup: under torchrun each rank runs its share of the run's envs (their seeds and video as in one process)
    local_envs, render = run_utils.local_envs(args.num_envs), reward_model is not None
    scene = dict(episode_length=args.episode_length, textures=textures, render_size=args.render_size)  # what CLIP sees
    scene.update(camera=args.camera, follow=args.camera_follow, quality=args.render_quality, task=args.task)
    with run_utils.exit_on_bad_input():
        env_fns = [make_env(args.env_id, args.seed + i, i, args.capture_video, run_name, render, **scene) for i in local_envs]
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
    with run_utils.exit_on_bad_input():  # the first frames: MuJoCo's renderer starts here, in each env's process
        obs, _ = envs.reset(seed=args.seed + local_envs[0])
    autoreset = np.zeros(envs.num_envs, dtype=bool)  # a finished env resets on the *next* step, which is no transition
    episode_sums = {name: np.zeros(envs.num_envs) for name in ("clip_return", *clip_envs.POSE_INDICATORS)}
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
        next_obs, ground_truth_rewards, terminations, truncations, infos = envs.step(actions)  # the task's score, in (0, 1]

        # ============ VLM-RM: the CLIP reward of the frame each env shows after its step ============
        if reward_model is not None:
            frames = infos["frame"]  # (num_envs, S, S, 3) uint8, S = --render-size; resized to CLIP's input inside
            rewards, along, off = reward_model.score(frames)
            rewards = rewards.cpu().numpy()
            episode_sums["clip_return"] += np.where(autoreset, 0.0, rewards)
            reward_window.add(frames, rewards, along, off, task=infos[args.task] if args.task else None, keep=~autoreset)
            reward_window.write_if_due(global_step)
        else:
            rewards = ground_truth_rewards
        # ===========================================================================================

        for name in clip_envs.POSE_INDICATORS:  # each task's predicate on the state, logged as pose/*
            episode_sums[name] += np.where(autoreset, 0.0, infos[name])
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_return, length = infos["episode"]["r"][i], infos["episode"]["l"][i]  # the task's score, or Humanoid's
                clip_return, judged = episode_sums["clip_return"][i], {}  # a --task's success: it holds on >= 1/2 of the steps
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
                if args.task:
                    task_fraction = episode_sums[args.task][i] / length
                    judged = {args.task: task_fraction, "success": float(task_fraction >= 0.5)}
                    writer.add_scalar("charts/task_fraction", task_fraction, global_step)
                    writer.add_scalar("charts/success", judged["success"], global_step)
                for name in clip_envs.POSE_INDICATORS:
                    writer.add_scalar(f"pose/{name}", episode_sums[name][i] / length, global_step)
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
