# Evaluate a training run as the paper did: the checkpoint with the highest training CLIP return, 100 episodes of the
# deterministic policy, success = the task holds on at least half of an episode's steps.
# Run: python evaluate.py runs/Humanoid-v5__sac_clip_humanoid__1__1700000000
import csv
import glob
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.utils.save_video import save_video

import clip_envs
import clip_reward
import run_utils


@dataclass
class Args:
    run_dir: tyro.conf.Positional[str]
    """the training run's folder (runs/...), with its checkpoints/ folder"""
    checkpoint: Optional[str] = None
    """evaluate this checkpoint file instead of the one with the highest training CLIP return"""
    episodes: int = 100
    """the number of evaluation episodes (the paper's 100)"""
    num_envs: int = 10
    """episodes run side by side (at most 256, and never more than --episodes); CLIP scores their frames in one batch"""
    seed: int = 10_000
    """episode i starts from the env seeded with seed + i (away from the training seeds)"""
    video_episodes: int = 3
    """write a video of this many of the first episodes"""
    render_size: Optional[int] = None
    """the humanoid's frame size, of the videos and of what CLIP scores (default: the run's; success does not depend on it)"""
    output_dir: Optional[str] = None
    """where to write evaluation.csv and the videos (default: RUN_DIR/eval_step_N; never overwritten)"""
    cuda: bool = True
    """run the policy and CLIP on a CUDA GPU if there is one"""


# The training script of each environment, whose networks the checkpoint holds; "Any": sac_clip_continuous_action.py's
# runs on any gymnasium env, whose episodes end as the env ends them.
SCRIPTS = {"CartPole": "dqn_clip_cartpole", "MountainCar": "sac_clip_mountaincar", "Humanoid": "sac_clip_humanoid",
           "Any": "sac_clip_continuous_action"}  # fmt: skip


def checkpoints_by_return(run_dir):
    """[(training return, step, path)] of the run's checkpoints, best first (NaN, no episode finished, last)."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt")):
        checkpoint = load_checkpoint(path)
        found.append((checkpoint["training_return"], checkpoint["global_step"], path))
    return sorted(found, key=lambda item: (not math.isnan(item[0]), item[0], item[1]), reverse=True)


def load_checkpoint(path):
    """A training script's checkpoint, or exit with one line naming the file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        sys.exit(f"error: cannot read {path} as a checkpoint ({type(error).__name__})")
    if not isinstance(checkpoint, dict) or "args" not in checkpoint or "training_return" not in checkpoint:
        sys.exit(f"error: {path} is not a checkpoint of this project's training scripts")
    return checkpoint


def make_env(saved, env_family, render_size=None):
    """One env as the run trained on (scene, camera, episode length), rendering rgb_array frames (the humanoid's at
    render_size, default the run's; any other env's at its own size, for the videos)."""
    if env_family == "Any":
        return gym.make(saved["env_id"], render_mode="rgb_array")
    if env_family == "CartPole":
        return clip_envs.make_cartpole(saved["env_id"], saved["episode_length"], render=True)
    textures_names = clip_envs.MOUNTAINCAR_TEXTURES if env_family == "MountainCar" else clip_envs.HUMANOID_TEXTURES
    textures = clip_envs.scene_textures(textures_names, saved["textures_dir"]) if saved["textured"] else None
    if env_family == "MountainCar":
        return clip_envs.make_mountaincar(saved["env_id"], saved["episode_length"], textures)
    return clip_envs.make_humanoid(
        saved["env_id"],
        saved["episode_length"],
        textures,
        render_size or saved["render_size"],
        saved["camera"],
        saved["camera_follow"],
        quality=saved.get("render_quality"),
        task=saved.get("task"),  # its reward: the task's ground-truth score
    )


def task_holds(env_family, saved, next_obs, ground_truth_rewards, infos):
    """Per env, whether the task holds after this step: the pole upright, the car at the flag, the humanoid's pose; None
    for a humanoid run given a --prompt without a --task, which has no automatic success."""
    if env_family == "CartPole":
        return ground_truth_rewards > 0  # CartPoleOnTrack's reward: 1 while the pole is within 12 degrees of upright
    if env_family == "MountainCar":
        return next_obs[:, 0] >= clip_envs.GOAL_POSITION
    if env_family == "Any":
        return clip_envs.ENV_TASKS[saved["task"]].holds(next_obs) if saved.get("task") else None
    return infos[saved["task"]] > 0 if saved.get("task") else None


if __name__ == "__main__":
    args = tyro.cli(Args)
    for name in ("episodes", "num_envs"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num_envs > 256:  # each env holds its own simulator and renderer in this process
        sys.exit(f"error: --num-envs must be <= 256, got {args.num_envs}")
    args.num_envs = min(args.num_envs, args.episodes)  # envs beyond --episodes would run episodes nobody counts
    if args.render_size is not None and not 32 <= args.render_size <= 4096:
        sys.exit(f"error: --render-size must be in [32, 4096], got {args.render_size}")
    if args.video_episodes < 0:
        sys.exit(f"error: --video-episodes must be >= 0, got {args.video_episodes}")
    if not 0 <= args.seed <= 2**32 - 1 - args.episodes:
        sys.exit(f"error: --seed must be in [0, 2**32 - 1 - episodes], got {args.seed}")
    if args.output_dir is not None and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        sys.exit(f"error: --output-dir {args.output_dir} is a file, not a folder")
    if not os.path.isdir(args.run_dir):
        sys.exit(f"error: {args.run_dir}: no such folder")
    if args.checkpoint is None:
        ranked = checkpoints_by_return(args.run_dir)
        if not ranked:
            sys.exit(f"error: {args.run_dir}: no checkpoints/step_*.pt (is it a run folder from runs/?)")
        training_return, _, args.checkpoint = ranked[0]
        print(f"{args.checkpoint}: the highest training return ({training_return:.2f}) of {len(ranked)} checkpoints")
    elif not os.path.isfile(args.checkpoint):
        sys.exit(f"error: --checkpoint {args.checkpoint}: no such file")
    checkpoint = load_checkpoint(args.checkpoint)
    saved = checkpoint["args"]
    env_family = "Any" if checkpoint.get("script") == "sac_clip_continuous_action.py" else None
    env_family = env_family or next((family for family in SCRIPTS if saved["env_id"].startswith(family)), None)
    if env_family is None:
        sys.exit(f"error: {args.checkpoint}: a run on {saved['env_id']}, which evaluate.py does not know")
    script = __import__(SCRIPTS[env_family])  # for its network classes
    judged = env_family in ("CartPole", "MountainCar") or bool(saved.get("task"))  # a --prompt alone has no predicate
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    step = checkpoint["global_step"]
    output_dir = args.output_dir or os.path.join(args.run_dir, f"eval_step_{step}")
    for suffix in range(1, 1000):  # never overwrite an earlier evaluation
        if not os.path.exists(output_dir):
            break
        output_dir = f"{args.output_dir or os.path.join(args.run_dir, f'eval_step_{step}')}_{suffix}"
    run_utils.writable_folder(output_dir, "--output-dir")  # before the work, whose results go there

    reward_model = None
    if saved.get("reward", "clip") == "clip":  # the CLIP return, with the run's own model, prompts and alpha
        try:
            reward_model = clip_reward.load_reward_model(
                saved["clip_model"],
                target_prompts=saved["prompt"],
                baseline_prompts=saved["baseline_prompt"] or saved["prompt"],  # no baseline: alpha 0
                alpha=saved["alpha"],
                checkpoint=saved["clip_checkpoint"],
                device=device,
                batch_size=saved["reward_batch_size"],
                precision=saved.get("clip_precision"),
            )
        except clip_reward.CLIPRewardError as error:
            sys.exit(f"error: {error}")
    try:
        if env_family == "Humanoid":
            clip_envs.check_mujoco_gl()
        if env_family == "Any":
            clip_envs.check_env(saved["env_id"])
        # Episodes of a fixed length end together; any other env's end when it ends them, and a finished env waits.
        autoreset = gym.vector.AutoresetMode.DISABLED if env_family == "Any" else gym.vector.AutoresetMode.NEXT_STEP
        env_fns = [lambda: make_env(saved, env_family, args.render_size) for _ in range(args.num_envs)]
        envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset)
    except clip_envs.SceneError as error:
        sys.exit(f"error: {error}")
    if env_family == "CartPole":
        q_network = script.QNetwork(envs, saved["hidden_sizes"]).to(device)
        q_network.load_state_dict(checkpoint["q_network"])
        policy = lambda obs: torch.argmax(q_network(obs), dim=1)  # greedy: no epsilon
    else:
        actor = script.Actor(envs, saved["hidden_sizes"]).to(device)
        actor.load_state_dict(checkpoint["actor"])
        policy = lambda obs: actor.get_action(obs)[2]  # the mean action: no sampling

    rows = []
    for first in range(0, args.episodes, args.num_envs):
        seeds = [args.seed + first + i for i in range(args.num_envs)]
        obs, _ = envs.reset(seed=seeds)
        holds, clip_returns, ground_truth_returns, videos = [], np.zeros(args.num_envs), np.zeros(args.num_envs), []
        running, lengths = np.ones(args.num_envs, dtype=bool), np.zeros(args.num_envs)
        while running.any() and len(holds) < saved.get("episode_length", np.inf):  # fixed lengths: no autoreset inside
            with torch.no_grad():
                actions = policy(torch.Tensor(obs).to(device)).cpu().numpy()
            obs, ground_truth_rewards, terminations, truncations, infos = envs.step(actions)
            frames = np.stack(envs.render())
            if env_family == "Any" and saved["render_size"]:  # CLIP scores what it scored in training
                scored = np.stack([clip_envs.square_frame(frame, saved["render_size"]) for frame in frames])
            else:
                scored = frames
            if reward_model is not None:
                clip_returns += np.where(running, reward_model(scored).cpu().numpy(), 0.0)
            ground_truth_returns += np.where(running, ground_truth_rewards, 0.0)
            holds.append(task_holds(env_family, saved, obs, ground_truth_rewards, infos))
            videos.append(frames[: max(0, args.video_episodes - first)].copy())  # a copy frees the batch
            lengths += running
            if holds[-1] is not None:
                holds[-1] = holds[-1] & running  # a finished env's later steps count in no episode
            if env_family == "Any":
                ended = running & (terminations | truncations)
                running &= ~ended
                if ended.any() and running.any():  # a finished env steps on, uncounted, until the batch is over
                    obs, _ = envs.reset(options={"reset_mask": ended})
        task_fraction = np.sum(holds, axis=0) / lengths if holds[0] is not None else np.full(args.num_envs, np.nan)
        for i in range(min(args.num_envs, args.episodes - first)):
            rows.append(
                {
                    "episode": first + i,
                    "seed": seeds[i],
                    "length": int(lengths[i]),
                    "success": int(task_fraction[i] >= 0.5) if judged else "",
                    "task_fraction": task_fraction[i] if judged else "",
                    "clip_return": clip_returns[i] if reward_model is not None else "",
                    "ground_truth_return": ground_truth_returns[i],
                }
            )
            if i < len(videos[0]):
                fps = envs.metadata.get("render_fps") or 30
                episode_frames = [video[i] for video in videos[: int(lengths[i])]]
                save_video(episode_frames, output_dir, lambda _: True, fps=fps, name_prefix="eval", episode_index=first + i)
    envs.close()

    with open(os.path.join(output_dir, "evaluation.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = "no automatic success (a prompt without a task: rate the videos)"
    if judged:
        success_rate = np.mean([row["success"] for row in rows])
        summary = f"success rate {success_rate:.2f}, mean task fraction {np.mean([row['task_fraction'] for row in rows]):.2f}"
    if reward_model is not None:
        summary += f", CLIP return {np.mean([row['clip_return'] for row in rows]):.2f}"
    summary += f", ground-truth return {np.mean([row['ground_truth_return'] for row in rows]):.2f}"
    print(f"{len(rows)} episodes of {args.checkpoint} (step {step}): {summary}; written to {output_dir}")
