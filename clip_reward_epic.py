"""Judge CLIPs as reward models before any RL: EPIC distance to labelled states, across models, tasks and alphas.

The paper's scaling result (Fig. 4, Fig. 7) compared CLIP sizes by the EPIC distance between the CLIP reward and
human labels of humanoid states. Here the labels come from the task predicates, so any CLIP can be ranked for every
task in minutes. The states are rendered once, embedded once per model, and every task and alpha is a projection of
those embeddings (clip_reward.py's math).

| --env       | states                                                         | goal label                    |
| humanoid    | assets/humanoid-states.npz: varied key poses of the 8 tasks    | the task's predicate          |
|             | and random-policy states (assets/make_humanoid_states.py)     |                               |
| cartpole    | uniform: cart position in [-2.4, 2.4], pole angle in [-pi, pi] | pole within 12 deg of upright |
| mountaincar | uniform: car position in [-1.2, 0.6]                           | car at the flag (x >= 0.45)   |
| labels      | the frames a person rated with rate.py (--labels)              | the person's yes / no         |

EPIC distance (Appendix A): D = sqrt((1 - rho) / 2), rho the Pearson correlation between reward and label over the
states. 0: the reward separates goal from other states as the labels do; ~0.71: unrelated; 1: reversed.

    python clip_reward_epic.py --env humanoid --clip-model RN50/openai ViT-L-14/laion2b_s32b_b82k ViT-bigG-14/laion2b_s39b_b160k
    python clip_reward_epic.py --env labels --labels runs/RUN/clip_frames/labels.sqlite --baseline-prompt "a humanoid robot"
"""

import csv
import os
import sys
from dataclasses import dataclass
from typing import Literal, Optional

import matplotlib
import numpy as np
import torch
import tyro

import clip_envs
import clip_reward
import rate
import run_utils

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HUMANOID_STATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "humanoid-states.npz")
TASKS = {"humanoid": list(clip_envs.HUMANOID_TASKS), "cartpole": ["upright"], "mountaincar": ["flag"], "labels": ["prompt"]}


def epic_distance(rewards, labels) -> float:
    """EPIC distance between a reward and 0/1 goal labels over a set of states, as the paper's Appendix A uses it:
    D = sqrt((1 - rho) / 2) with rho the Pearson correlation. 0: the reward orders and spaces the states as the
    labels do, up to scale and shift; 1: exactly reversed; ~0.71: unrelated."""
    rewards, labels = np.asarray(rewards, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if rewards.std() == 0 or labels.std() == 0:
        return float("nan")  # a constant reward or a set without both kinds of state: correlation is undefined
    rho = float(np.corrcoef(rewards, labels)[0, 1])
    return float(np.sqrt(max(0.0, (1 - rho) / 2)))


@dataclass
class Args:
    env: Literal["humanoid", "cartpole", "mountaincar", "labels"] = "humanoid"
    """which environment's states to score; labels: the frames a person rated (--labels)"""
    labels: Optional[str] = None
    """--env labels: a rated folder's labels.sqlite or a CSV from rate.py export (frames rated yes / no; skips left out)"""
    rater: Optional[str] = None
    """--env labels: whose labels (needed when several people rated)"""
    prompt: Optional[str] = None
    """--env labels: the goal prompt (default: the one the frames were rated for)"""
    baseline_prompt: Optional[str] = None
    """--env labels: the baseline prompt (needed for alphas > 0)"""
    clip_model: tuple[str, ...] = (clip_reward.DEFAULT_MODEL,)
    """open_clip models to compare: ARCH/PRETRAINED, ARCH (with --clip-checkpoint) or local-dir:/path"""
    clip_checkpoint: Optional[tuple[str, ...]] = None
    """local weights files, one per --clip-model ("-" for a model that needs none)"""
    tasks: Optional[tuple[str, ...]] = None
    """humanoid tasks to score (default: all eight); each uses its paper prompt"""
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """goal-baseline regularisation strengths"""
    num_states: int = 500
    """cartpole and mountaincar: uniformly sampled states"""
    max_states: Optional[int] = None
    """humanoid: score a seeded random subset of this many states (default: all)"""
    seed: int = 0
    """seed of the sampled states"""
    render_size: int = clip_envs.RENDER_SIZE
    """humanoid: frame size, as in training"""
    output_dir: str = "epic"
    """where epic.csv and the plots go"""
    overwrite: bool = False
    """replace an earlier epic.csv in --output-dir"""
    cuda: bool = True
    """use the GPU for CLIP if there is one"""


def humanoid_states(args):
    """Frames of the labelled humanoid states in the default scene, and their labels (N, tasks)."""
    saved = np.load(HUMANOID_STATES)
    index = np.arange(len(saved["qpos"]))
    if args.max_states is not None and args.max_states < len(index):
        index = np.sort(np.random.default_rng(args.seed).choice(index, args.max_states, replace=False))
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    env = clip_envs.make_humanoid("Humanoid-v5", 100, textures, args.render_size)
    env.reset(seed=args.seed)
    frames = []
    for i in index:
        env.unwrapped.set_state(saved["qpos"][i], saved["qvel"][i])
        frames.append(env.render())
    env.close()
    columns = [list(saved["tasks"]).index(task) for task in args.tasks]
    return np.stack(frames), saved["labels"][index][:, columns]


def cartpole_states(args):
    rng = np.random.default_rng(args.seed)
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    env.reset(seed=args.seed)
    frames, labels = [], []
    for x, angle in zip(rng.uniform(-2.4, 2.4, args.num_states), rng.uniform(-np.pi, np.pi, args.num_states)):
        env.unwrapped.state = np.array([x, 0.0, angle, 0.0])
        frames.append(env.render())
        labels.append([abs(angle) <= env.unwrapped.theta_threshold_radians])
    env.close()
    return np.stack(frames), np.array(labels, dtype=np.uint8)


def mountaincar_states(args):
    rng = np.random.default_rng(args.seed)
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    env.reset(seed=args.seed)
    frames, labels = [], []
    for x in rng.uniform(-1.2, 0.6, args.num_states):
        env.unwrapped.state = np.array([x, 0.0])
        frames.append(env.render())
        labels.append([x >= clip_envs.GOAL_POSITION])
    env.close()
    return np.stack(frames), np.array(labels, dtype=np.uint8)


def labelled_states(args):
    """The frames a person rated yes or no for a prompt (rate.py), and those labels (N, 1)."""
    from PIL import Image

    prompt, kind, labels = rate.read_labels(args.labels, args.rater)
    raters = sorted({rater for _, rater, _ in labels})
    if kind != "frames":
        raise rate.LabelError(f"{args.labels} rates {kind}, not frames: EPIC needs labelled frames")
    if len(raters) > 1:
        raise rate.LabelError(f"{args.labels} holds the labels of {', '.join(raters)}: choose one with --rater")
    decided = [(path, value == "yes") for path, _, value in labels if value != "skip"]
    if len(decided) < 2:
        raise rate.LabelError(f"{args.labels} holds {len(decided)} yes/no labels{' of ' + args.rater if args.rater else ''}: "
                              "EPIC needs at least 2")  # fmt: skip
    args.prompt = args.prompt or prompt
    frames = [np.asarray(Image.open(path).convert("RGB")) for path, _ in decided]
    if len({frame.shape for frame in frames}) > 1:
        raise rate.LabelError("the rated frames differ in size: rate frames of one run (one --render-size)")
    return np.stack(frames), np.array([[label] for _, label in decided], dtype=np.uint8)


def write_rows(path, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def task_prompts(env, task, args):
    """(goal, baseline) prompt of a task: the paper's (Table 3), or for --env labels the given ones."""
    if env == "humanoid":
        return clip_envs.HUMANOID_TASKS[task], clip_envs.PROMPTS["humanoid"][1]
    if env == "labels":
        return args.prompt, args.baseline_prompt or args.prompt  # no baseline: alpha 0 only (checked)
    return clip_envs.PROMPTS[env]


if __name__ == "__main__":
    args = tyro.cli(Args)
    args.tasks = tuple(TASKS[args.env]) if args.tasks is None else args.tasks
    unknown = [task for task in args.tasks if task not in TASKS[args.env]]
    checkpoints = args.clip_checkpoint or ("-",) * len(args.clip_model)
    if unknown:
        sys.exit(f"error: --tasks for {args.env} are {', '.join(TASKS[args.env])}; got {', '.join(unknown)}")
    if len(checkpoints) != len(args.clip_model):
        sys.exit(f"error: --clip-checkpoint needs one entry per --clip-model ({len(args.clip_model)}), '-' for none")
    if args.num_states < 2 or (args.max_states is not None and args.max_states < 2):
        sys.exit("error: --num-states and --max-states must be >= 2")
    for flag, values in (("--clip-model", args.clip_model), ("--tasks", args.tasks), ("--alphas", args.alphas)):
        if len(values) == 0:
            sys.exit(f"error: {flag} was given no values: give at least one, or leave it out for the default")
    if (args.env == "labels") != (args.labels is not None):
        sys.exit("error: --labels goes with --env labels (a rated folder's labels.sqlite or an exported CSV)")
    if args.env == "labels" and args.baseline_prompt is None and any(alpha > 0 for alpha in args.alphas):
        sys.exit("error: --alphas above 0 need a --baseline-prompt for --env labels (or --alphas 0)")
    if not 32 <= args.render_size <= 4096:
        sys.exit(f"error: --render-size must be in [32, 4096] (as in sac_clip_humanoid.py), got {args.render_size}")
    try:
        for alpha in args.alphas:
            clip_reward.check_alpha(alpha)
        for spec, checkpoint in zip(args.clip_model, checkpoints):  # every model, before the rendering and scoring
            clip_reward.check_clip_spec(spec, checkpoint=None if checkpoint == "-" else checkpoint)
    except clip_reward.CLIPRewardError as error:
        sys.exit(f"error: {error}")
    csv_path = os.path.join(args.output_dir, "epic.csv")
    if os.path.exists(csv_path) and not args.overwrite:
        sys.exit(f"error: {csv_path} exists from an earlier run: pass --overwrite, or another --output-dir")
    run_utils.writable_folder(args.output_dir, "--output-dir")  # before the scoring, whose results go there
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    try:
        if args.env == "humanoid":
            clip_envs.check_mujoco_gl()
        states = {"humanoid": humanoid_states, "cartpole": cartpole_states, "mountaincar": mountaincar_states,
                  "labels": labelled_states}[args.env]  # fmt: skip
        frames, labels = states(args)
    except (clip_envs.SceneError, rate.LabelError) as error:
        sys.exit(f"error: {error}")
    print(
        f"{args.env}: {len(frames)} states rendered once; goal states per task: {dict(zip(args.tasks, labels.sum(0).tolist()))}"
    )

    rows, rewards_of, parameters = [], {}, {}
    for spec, checkpoint in zip(args.clip_model, checkpoints):
        try:
            model, tokenizer = clip_reward.load_clip(spec, checkpoint=None if checkpoint == "-" else checkpoint, device=device)
            first_goal, first_baseline = task_prompts(args.env, args.tasks[0], args)
            reward_model = clip_reward.CLIPReward(model, tokenizer, [first_goal], [first_baseline], alpha=0.0)
        except clip_reward.CLIPRewardError as error:  # a download that failed: the models scored so far are kept
            scored = f"; the scores of {', '.join(parameters)} are in {csv_path}" if rows else ""
            sys.exit(f"error: {error}{scored}")
        parameters[spec] = sum(p.numel() for p in model.parameters())
        embeddings = reward_model.embed_images(frames)  # once per model; every task and alpha below is a projection
        for t, task in enumerate(args.tasks):
            goal, baseline = (reward_model.embed_prompts([prompt]) for prompt in task_prompts(args.env, task, args))
            for alpha in args.alphas:
                projection = clip_reward.projection_matrix(goal, baseline, alpha)
                rewards = clip_reward.goal_baseline_reward(embeddings, goal, projection).cpu().numpy()
                rewards_of[spec, task, alpha] = rewards
                n_goal = int(labels[:, t].sum())
                epic = epic_distance(rewards, labels[:, t])
                rows.append(dict(model=spec, task=task, alpha=alpha, epic=epic, n_goal=n_goal, n_other=len(labels) - n_goal))
        del model, reward_model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        write_rows(csv_path, rows)  # after each model, so a later model's failure loses nothing scored

    print("EPIC distance to the labels (0 best, 0.71 unrelated); columns: alpha")
    print(f"{'model':>40} {'task':>14} " + " ".join(f"{alpha:>6.2f}" for alpha in args.alphas))
    for spec in args.clip_model:
        for task in args.tasks:
            values = [row["epic"] for row in rows if row["model"] == spec and row["task"] == task]
            print(f"{spec[-40:]:>40} {task:>14} " + " ".join(f"{value:>6.3f}" for value in values))

    # EPIC against alpha, one line per model; EPIC against model size, one line per alpha (both mean over the tasks).
    fig, (by_alpha, by_size) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in args.clip_model:
        mean = [np.nanmean([r["epic"] for r in rows if r["model"] == spec and r["alpha"] == alpha]) for alpha in args.alphas]
        by_alpha.plot(args.alphas, mean, marker="o", label=spec)
    by_alpha.set(
        xlabel="alpha", ylabel=f"EPIC distance (mean over {len(args.tasks)} tasks)", title="goal-baseline regularisation"
    )
    by_alpha.legend(fontsize=7)
    sizes = [parameters[spec] for spec in args.clip_model]
    for alpha in args.alphas:
        mean = [
            np.nanmean([r["epic"] for r in rows if r["model"] == spec and r["alpha"] == alpha]) for spec in args.clip_model
        ]
        by_size.plot(sizes, mean, marker="o", label=f"alpha {alpha}")
    by_size.set(
        xscale="log", xlabel="CLIP parameters", ylabel=f"EPIC distance (mean over {len(args.tasks)} tasks)", title="model size"
    )
    by_size.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output_dir, "epic.png"), dpi=120)

    # Fig. 7: the reward of goal states against the others, per model (first task, lowest and highest alpha).
    task, ends = args.tasks[0], sorted({min(args.alphas), max(args.alphas)})
    fig, axes = plt.subplots(
        len(ends), len(args.clip_model), figsize=(3.6 * len(args.clip_model), 2.8 * len(ends)), squeeze=False
    )
    for row, alpha in enumerate(ends):
        for column, spec in enumerate(args.clip_model):
            rewards, goal_states = rewards_of[spec, task, alpha], labels[:, 0].astype(bool)
            bins = np.linspace(rewards.min(), rewards.max() + 1e-9, 30)
            axes[row, column].hist(rewards[~goal_states], bins, alpha=0.6, density=True, label="other")
            axes[row, column].hist(rewards[goal_states], bins, alpha=0.6, density=True, label=task)
            axes[row, column].set_title(f"{spec[-30:]}, alpha {alpha}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("CLIP reward")
    fig.tight_layout()
    fig.savefig(os.path.join(args.output_dir, "reward_histograms.png"), dpi=120)
    print(f"wrote {csv_path}, epic.png and reward_histograms.png in {args.output_dir}")
