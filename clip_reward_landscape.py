"""Check a prompt before training: how the CLIP reward varies with the state that defines the goal.

Sweeps one state variable, renders each state with the training script's own renderer, embeds
the frames once and computes the reward for several alphas (projection is cheap: embed once,
project many times). Writes a plot and a CSV, and prints per alpha where the reward peaks, its
Pearson correlation rho with the ground-truth reward, and the EPIC distance to it.

EPIC (Gleave et al., 2021) compares reward functions after removing potential shaping. For
rewards of the state only, evaluated on the same sampled states, it reduces to the Pearson
distance sqrt((1 - rho) / 2): 0 for rewards that agree up to scale and offset, 0.71 for
uncorrelated ones, 1 for opposite ones.

| --env       | swept state                              | ground truth                        |
| cartpole    | pole angle over [-180, 180] degrees      | 1 while |angle| <= 12 degrees        |
| mountaincar | car position over the track [-1.2, 0.6]  | 1 at the flag (x >= 0.45)           |
| humanoid    | blend from standing (0) to kneeling (1)  | the blend fraction                  |

    python clip_reward_landscape.py --env cartpole --clip-model ViT-B-32/laion2b_s34b_b79k
"""

import csv
import glob
import os
import sys
from dataclasses import dataclass
from typing import Literal, Optional

import matplotlib
import numpy as np
import torch
import tyro
from PIL import Image

import clip_envs
import clip_reward
import run_utils
from assets import humanoid_poses
from clip_reward_epic import epic_distance

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Args:
    env: Literal["cartpole", "mountaincar", "humanoid"] = "cartpole"
    """which environment's reward to sweep"""
    prompt: Optional[tuple[str, ...]] = None
    """the goal prompt(s); default: the paper's for --env, as in the training script"""
    baseline_prompt: Optional[tuple[str, ...]] = None
    """the baseline prompt(s); default: the paper's for --env, as in the training script"""
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """goal-baseline regularisation strengths to compare"""
    clip_model: str = clip_reward.DEFAULT_MODEL
    """open_clip model as ARCH/PRETRAINED, ARCH with --clip-checkpoint, or local-dir:/path"""
    clip_checkpoint: Optional[str] = None
    """local CLIP weights file for --clip-model ARCH (offline use)"""
    num_states: int = 121
    """how many states to sample along the sweep"""
    textured: bool = True
    """mountaincar and humanoid: the paper's textured scene, the training scripts' default"""
    textures_dir: Optional[str] = None
    """mountaincar and humanoid: a folder with any of the authors' texture files, as in the training scripts"""
    camera: tuple[float, float, float, float] = clip_envs.PAPER_CAMERA
    """humanoid: DISTANCE ELEVATION AZIMUTH LOOKAT_HEIGHT, as in sac_clip_humanoid.py"""
    output_dir: str = "landscapes"
    """where the PNG and CSV go"""
    save_frames: Optional[str] = None
    """also write each swept frame as a PNG into this folder, as CLIP sees it (after the reward model's resize)"""
    overwrite: bool = False
    """replace the results of an earlier sweep of this env in --output-dir (and its --save-frames)"""
    cuda: bool = True
    """use the GPU for CLIP if there is one"""


def cartpole_sweep(num_states, textures, args):
    angles = np.linspace(-np.pi, np.pi, num_states)
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    env.reset(seed=0)
    frames = []
    for angle in angles:
        env.unwrapped.state = np.array([0.0, 0.0, angle, 0.0])
        frames.append(env.render())
    upright = (np.abs(angles) <= env.unwrapped.theta_threshold_radians).astype(float)
    env.close()
    return np.degrees(angles), np.stack(frames), upright, 0.0, "pole angle (degrees, positive leans right)"


def mountaincar_sweep(num_states, textures, args):
    positions = np.linspace(-1.2, 0.6, num_states)
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, textures)
    env.reset(seed=0)
    frames = []
    for x in positions:
        env.unwrapped.state = np.array([x, 0.0])
        frames.append(env.render())
    env.close()
    at_flag = (positions >= clip_envs.GOAL_POSITION).astype(float)
    return positions, np.stack(frames), at_flag, clip_envs.GOAL_POSITION, "car position"


def humanoid_sweep(num_states, textures, args):
    env = clip_envs.make_humanoid("Humanoid-v5", 1000, textures, camera=args.camera)
    env.reset(seed=0)
    standing, kneeling = humanoid_poses.standing_and_kneeling_qpos(env)
    blends = np.linspace(0, 1, num_states)
    frames = []
    for t in blends:
        env.unwrapped.set_state((1 - t) * standing + t * kneeling, np.zeros(env.unwrapped.model.nv))
        frames.append(env.render())
    env.close()
    return blends, np.stack(frames), blends, 1.0, "pose: standing (0) to kneeling (1)"


def save_frames(folder, env, states, images):
    """Write float images (N, 3, S, S) in [0, 1] as PNGs named by index and state."""
    os.makedirs(folder, exist_ok=True)
    for earlier in glob.glob(os.path.join(folder, f"{env}_*.png")):  # --overwrite: no frames of another sweep left among them
        os.remove(earlier)
    pixels = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    for i, (state, picture) in enumerate(zip(states, pixels)):
        Image.fromarray(picture).save(os.path.join(folder, f"{env}_{i:03d}_{state:+.3f}.png"))


SWEEPS = {"cartpole": cartpole_sweep, "mountaincar": mountaincar_sweep, "humanoid": humanoid_sweep}


def pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1])


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.num_states < 2:
        sys.exit(f"error: --num-states must be >= 2, got {args.num_states}")
    for flag, values in (("--prompt", args.prompt), ("--baseline-prompt", args.baseline_prompt), ("--alphas", args.alphas)):
        if values is not None and len(values) == 0:
            sys.exit(f"error: {flag} was given no values: give at least one, or leave it out for the default")
    for flag, values in (("--prompt", args.prompt), ("--baseline-prompt", args.baseline_prompt)):
        if not run_utils.SENTENCES.test(values, args):  # the training scripts' rule
            sys.exit(f"error: {flag} must be {run_utils.SENTENCES.text}, got {values!r}")
    stem = os.path.join(args.output_dir, f"{args.env}_landscape")
    earlier = [path for path in (f"{stem}.png", f"{stem}.csv") if os.path.exists(path)]
    if args.save_frames:
        earlier += glob.glob(os.path.join(args.save_frames, f"{args.env}_*.png"))
    if earlier and not args.overwrite:
        sys.exit(f"error: {earlier[0]} exists from an earlier sweep: pass --overwrite, or another --output-dir/--save-frames")
    prompt = args.prompt or (clip_envs.PROMPTS[args.env][0],)
    baseline_prompt = args.baseline_prompt or (clip_envs.PROMPTS[args.env][1],)
    names = {"mountaincar": clip_envs.MOUNTAINCAR_TEXTURES, "humanoid": clip_envs.HUMANOID_TEXTURES}.get(args.env)
    try:
        if args.env == "humanoid":
            clip_envs.check_camera(args.camera)
        textures = clip_envs.scene_textures(names, args.textures_dir, args.textured) if names else None
    except clip_envs.SceneError as error:
        sys.exit(f"error: {error}")
    run_utils.writable_folder(args.output_dir, "--output-dir")
    if args.save_frames:
        run_utils.writable_folder(args.save_frames, "--save-frames")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    try:
        for alpha in args.alphas:
            clip_reward.check_alpha(alpha)  # before a long download, not after
        reward_model = clip_reward.load_reward_model(
            args.clip_model, prompt, baseline_prompt, alpha=max(args.alphas), checkpoint=args.clip_checkpoint, device=device
        )
    except clip_reward.CLIPRewardError as error:
        sys.exit(f"error: {error}")

    try:
        states, frames, ground_truth, goal, state_label = SWEEPS[args.env](args.num_states, textures, args)
    except clip_envs.SceneError as error:
        sys.exit(f"error: {error}")
    if args.save_frames:
        save_frames(args.save_frames, args.env, states, reward_model.preprocess.resize(frames))
    embeddings = reward_model.embed_images(frames)  # embed once ...
    rewards = {
        alpha: reward_model.rewards_from_embeddings(embeddings, alpha).cpu().numpy() for alpha in args.alphas
    }  # ... project many times

    os.makedirs(args.output_dir, exist_ok=True)
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["state", "ground_truth", *[f"reward_alpha_{alpha}" for alpha in args.alphas]])
        for i, state in enumerate(states):
            writer.writerow([f"{state:.6g}", ground_truth[i], *[f"{rewards[alpha][i]:.8g}" for alpha in args.alphas]])

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for alpha in args.alphas:
        r = rewards[alpha]
        ax.plot(states, (r - r.min()) / (r.max() - r.min() + 1e-12), label=f"alpha = {alpha}")
    ax.plot(states, ground_truth / max(ground_truth.max(), 1e-12), "k--", alpha=0.4, label="ground truth")
    ax.axvline(goal, color="gray", linewidth=3, alpha=0.3, label="goal")
    ax.set_xlabel(state_label)
    ax.set_ylabel("reward, min-max normalised per alpha")
    ax.set_title(f"{args.env}: \"{' / '.join(prompt)}\" vs \"{' / '.join(baseline_prompt)}\"\n{args.clip_model}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=120)

    print(f"{args.env}: {len(states)} states, CLIP {args.clip_model}")
    print(f"{'alpha':>6} {'peak at':>9} {'pearson':>8} {'EPIC':>6}")
    for alpha in args.alphas:
        rho = pearson(rewards[alpha], ground_truth)
        epic = epic_distance(rewards[alpha], ground_truth)
        print(f"{alpha:>6.2f} {states[np.argmax(rewards[alpha])]:>9.3f} {rho:>8.3f} {epic:>6.3f}")
    print(
        f"wrote {stem}.png and {stem}.csv" + (f"; frames as CLIP sees them in {args.save_frames}" if args.save_frames else "")
    )
