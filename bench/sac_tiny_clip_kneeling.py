"""Benchmark: does SAC teach the humanoid to kneel from one sentence, over seeds, offline on a CPU?

For each of --seeds (side by side, one torch thread each), trains sac_clip_humanoid.py --task kneeling in the
default scene at 128 px with the cheap render (shadow map 512, no multisampling), rewarded by the project's tiny
humanoid CLIP (a test asset, assets/make_tiny_humanoid_clip.py), or with --reward ground-truth by the task's dense
score of the MuJoCo state (the reference), then picks a checkpoint (one every --checkpoint-frequency steps) by the
return its deterministic policy earns from the reward it learned, over --validation-episodes at the training frame
size, and evaluates it with evaluate.py: deterministic actions, 20 episodes on other seeds, success = kneeling on at
least half of the steps. For comparison it also evaluates the paper's pick (the highest training return) and the
final policy alike, each distinct checkpoint once. Writes to --output-dir the run's learning curve (<label>.csv),
this report (<label>.txt), a video of the chosen policy at 480 px (<label>.mp4), and redraws
kneeling_learning_curves.png from every curve there (mean over seeds, band from the lowest to the highest seed);
every file of a seed ends in -seed-<seed>. Last lines: the final policy's success rate over seeds, how many seeds
succeed on >= 0.5 of the episodes, and `final success rate M ± S over N seeds (each a b c; random Y)`, of each
seed's chosen checkpoint.

    python bench/sac_tiny_clip_kneeling.py                              # "a humanoid robot kneeling", 2-2.5 h on 2 cores
    python bench/sac_tiny_clip_kneeling.py --reward ground-truth        # the reference
    python bench/sac_tiny_clip_kneeling.py --prompt "a humanoid robot standing up"

The tiny CLIP learned from the project's own frames labelled by the task predicates: a run shows that the whole path
frame -> CLIP -> reward -> SAC -> pose works, not what a real CLIP reaches.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import clip_envs  # noqa: E402
from evaluate import checkpoints_by_return  # noqa: E402
from bench.learning_curves import check_seeds, plot_curves, run_seeds, save_curve, slug, summary_line, train_in  # noqa: E402

# The paper's humanoid SAC (gamma 0.95, learning rates 6e-4, 256 units, entropy autotuned) with what a CPU affords:
# learning from step 4000 and, with 8 envs, one gradient step per 4 env steps (the paper: one per 32, over 10M steps).
FAST_SAC = {"--train-frequency": 1, "--batch-size": 256}


@dataclass
class Args:
    reward: Literal["clip", "ground-truth"] = "clip"
    """what SAC learns from: the tiny CLIP's reward of the frame, or the kneeling task's ground-truth score"""
    prompt: Optional[str] = None
    """the goal prompt (default: the task's, "a humanoid robot kneeling"); success is always kneeling"""
    clip_model: str = f"local-dir:{os.path.join(REPO_ROOT, 'assets', 'tiny-humanoid-clip-for-tests')}"
    """the reward model; any open_clip spec works"""
    alpha: float = 0.0
    """goal-baseline regularisation (the paper's humanoid runs: 0)"""
    total_timesteps: int = 150_000
    """training steps"""
    num_envs: int = 8
    """parallel envs (CLIP scores their frames in one call)"""
    learning_starts: int = 4000
    """random actions until this step, then SAC's"""
    gradient_steps: int = 2
    """SAC updates per vector step of --num-envs env steps"""
    center_rewards: bool = False
    """subtract each batch's mean reward in the critic's target (sac_clip_humanoid.py --center-rewards)"""
    ent_coef: Optional[float] = None
    """a fixed SAC entropy coefficient instead of the auto-tuned one (the paper's, the default)"""
    render_size: int = 128
    """frame size CLIP sees (the tiny CLIP's input)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """training seeds, one run each"""
    parallel: int = 3
    """runs side by side (each with one torch thread when more than one)"""
    checkpoint_frequency: int = 16_000
    """checkpoint every this many steps (0: only at the end); the bench evaluates the one that validates best"""
    validation_episodes: int = 20
    """deterministic episodes per checkpoint (seeds 20000+) that rank the checkpoints by the learned reward's return"""
    eval_episodes: int = 20
    """deterministic evaluation episodes of the final policy (and of the random policy)"""
    block: int = 40
    """episodes per row of the printed learning curve"""
    label: Optional[str] = None
    """the configuration's name in the plot and its files (default: from --reward, --prompt and --render-size)"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "results", "kneeling")
    """where the curve, the video and the plot go"""
    run_dir: Optional[str] = None
    """evaluate this finished training run (runs/<name>, made with the same --reward and the one seed of --seeds)
    instead of training one"""
    keep_runs: Optional[str] = None
    """folder that keeps each seed's training run (seed-<seed>/runs/<name>: events, checkpoints) and its evaluation
    (seed-<seed>/eval/<name>), to resume, inspect or roll out later; by default both go with a temporary folder"""


def random_policy_success_rate(episodes, seed=10_000):
    """Share of uniformly random 100-step episodes, on evaluate.py's seeds, that kneel on at least half of their steps."""
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.action_space.seed(seed)
    successes = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        kneeling, done = [], False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            kneeling.append(clip_envs.task_success(env.unwrapped.data)["kneeling"])
            done = terminated or truncated
        successes.append(np.mean(kneeling) >= 0.5)
    env.close()
    return float(np.mean(successes))


def without_paths(line):
    """evaluate.py's summary line without this machine's folders: the checkpoint by its file name, no output folder."""
    return re.sub(r"; written to .*$", "", re.sub(r"of \S*/(step_[0-9]+\.pt)", r"of \1", line))


def evaluate(run_dir, output_dir, *options):
    """evaluate.py's output lines for the run, with these options."""
    command = [sys.executable, os.path.join(REPO_ROOT, "evaluate.py"), run_dir, "--output-dir", output_dir, *options]
    evaluation = subprocess.run(command, capture_output=True, text=True)
    if evaluation.returncode:
        sys.exit(f"evaluate.py failed: {(evaluation.stderr.strip().splitlines() or ['no message'])[-1]}")
    return evaluation.stdout.strip().splitlines()


def validated_checkpoint(run_dir, output_dir, reward, episodes):
    """(the checkpoint whose deterministic policy earns the most of the learned reward on validation seeds, that
    return); ground truth never chooses a CLIP run's checkpoint."""
    learned = "CLIP return" if reward == "clip" else "ground-truth return"
    returns = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt"))):
        options = ["--checkpoint", path, "--episodes", str(episodes), "--seed", "20000", "--video-episodes", "0"]
        summary = evaluate(run_dir, os.path.join(output_dir, os.path.basename(path)[:-3]), *options)[-1]
        returns[path] = float(re.search(rf"{learned} (-?[0-9.]+)", summary).group(1))
    best = max(returns, key=lambda path: (returns[path], path))
    return best, returns[best]


def evaluate_once(picks, evaluate_checkpoint):
    """{name: evaluate_checkpoint(name, path)} for picks {name: checkpoint path}: each distinct checkpoint is evaluated
    once, under the first name that picked it, and every name that picked it gets that evaluation."""
    evaluated = {}
    for name, path in picks.items():
        if path not in evaluated:
            evaluated[path] = evaluate_checkpoint(name, path)
    return {name: evaluated[path] for name, path in picks.items()}


def summary_lines(chosen, final, random_rate):
    """The bench's last lines: the final policies' success over seeds, how many seeds succeed on at least half of
    the episodes (the chosen checkpoint's and the final policy's), then the chosen checkpoints' success over seeds."""
    return [
        summary_line("success rate", final, random_rate, of="the final policy's (no choosing)"),
        f"success >= 0.5 in {sum(rate >= 0.5 for rate in chosen)} of {len(chosen)} seeds (the chosen checkpoint), "
        f"{sum(rate >= 0.5 for rate in final)} of {len(final)} (the final policy)",
        summary_line("success rate", chosen, random_rate),
    ]


def train_and_evaluate(args, seed, prompt, label, workdir, random_rate):
    """One seed: train (unless --run-dir), choose a checkpoint by the learned reward's validation return, evaluate it.
    Writes the seed's curve, report and video to --output-dir; returns the success rates of the chosen checkpoint and
    of the final policy, and the report."""
    run_dir = args.run_dir
    if run_dir is None:
        os.makedirs(workdir, exist_ok=True)
        earlier_runs = set(glob.glob(os.path.join(workdir, "runs", "*")))
        command = [sys.executable, os.path.join(REPO_ROOT, "sac_clip_humanoid.py"), "--reward", args.reward,
                   "--clip-model", args.clip_model, "--task", "kneeling", "--alpha", str(args.alpha),
                   "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs),
                   "--gradient-steps", str(args.gradient_steps), "--learning-starts", str(args.learning_starts),
                   "--render-size", str(args.render_size), "--render-quality", "512", "0", "--seed", str(seed),
                   "--checkpoint-frequency", str(args.checkpoint_frequency),
                   *(["--prompt", args.prompt] if args.prompt else []),
                   *(["--center-rewards"] if args.center_rewards else []),
                   *(["--no-autotune", "--ent-coef", str(args.ent_coef)] if args.ent_coef is not None else []),
                   *[str(item) for flag_value in FAST_SAC.items() for item in flag_value]]  # fmt: skip
        train_in(workdir, command, min(args.parallel, len(args.seeds)))
        (run_dir,) = set(glob.glob(os.path.join(workdir, "runs", "*"))) - earlier_runs
    eval_dir = os.path.join(workdir, "eval", os.path.basename(run_dir))
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    curve = {tag: [e.value for e in events.Scalars(tag)] for tag in ("charts/success", "pose/kneeling")}
    steps = [e.step for e in events.Scalars("charts/success")]
    learned = "charts/episodic_clip_return" if args.reward == "clip" else "charts/episodic_return"
    if ("charts/episodic_clip_return" in events.Tags()["scalars"]) != (args.reward == "clip"):
        sys.exit(f"error: --run-dir {run_dir} did not learn from --reward {args.reward}")
    curve["return"] = [e.value for e in events.Scalars(learned)]
    minutes = (events.Scalars("charts/SPS")[-1].wall_time - events.Scalars("charts/SPS")[0].wall_time) / 60

    # deterministic, with a video at 480 px (success is the state's; the frame size only shows it)
    chosen, validation_return = validated_checkpoint(run_dir, f"{eval_dir}_validation", args.reward, args.validation_episodes)
    test = ["--episodes", str(args.eval_episodes), "--video-episodes", "1", "--render-size", "480"]
    ranked = checkpoints_by_return(run_dir)  # evaluate.py's own pick: the paper's
    picks = {"validated": chosen, "paper": ranked[0][2], "final": max(glob.glob(f"{run_dir}/checkpoints/step_*.pt"))}
    evaluations = evaluate_once(picks, lambda name, path: evaluate(run_dir, f"{eval_dir}_{name}", "--checkpoint", path, *test))
    rates = {name: float(re.search(r"success rate ([0-9.]+)", lines[-1]).group(1)) for name, lines in evaluations.items()}
    success_rate, final_rate = rates["validated"], rates["final"]
    written_to = re.search(r"written to (.+)$", evaluations["validated"][-1]).group(1)  # evaluate.py never overwrites
    (video,) = glob.glob(os.path.join(written_to, "*.mp4"))
    shutil.copy(video, os.path.join(args.output_dir, f"{slug(label)}-seed-{seed}.mp4"))

    columns = {"success": curve["charts/success"], "kneeling_fraction": curve["pose/kneeling"], "return": curve["return"]}
    save_curve(args.output_dir, label, seed, steps, columns, {"success": random_rate})
    reward = args.clip_model.replace(REPO_ROOT + os.sep, "") if args.reward == "clip" else "the ground-truth kneeling score"
    report = [f"sac_clip_humanoid.py --task kneeling, reward {reward}, prompt {prompt!r}, alpha {args.alpha}, seed {seed}"]
    side_by_side = f", {min(args.parallel, len(args.seeds))} runs side by side" if args.run_dir is None else ""
    report.append(
        f"{steps[-1]} steps in {minutes:.1f} min{side_by_side}, {args.gradient_steps} updates per {args.num_envs} env steps"
    )
    report.append(f"{'up to step':>10} {'success':>8} {'kneeling':>9} {'return':>8}")
    for i in range(0, len(steps), args.block):
        block = slice(i, i + args.block)
        report.append(
            f"{steps[min(i + args.block, len(steps)) - 1]:>10} {np.mean(curve['charts/success'][block]):>8.2f} "
            f"{np.mean(curve['pose/kneeling'][block]):>9.2f} {np.mean(curve['return'][block]):>8.2f}"
        )
    step = int(re.search(r"step_0*([0-9]+)", chosen).group(1))
    report.append(f"checkpoint of step {step}: the highest validation return ({validation_return:.2f})")
    report.append(f"evaluate.py, that checkpoint: {without_paths(evaluations['validated'][-1])}")
    paper_pick = f"the highest training return ({ranked[0][0]:.2f}) of {len(ranked)} checkpoints"
    report.append(f"evaluate.py, the paper's pick ({paper_pick}): {without_paths(evaluations['paper'][-1])}")
    report.append(f"evaluate.py, the final policy: {without_paths(evaluations['final'][-1])}")
    report.append(f"final success rate {success_rate:.2f} (random {random_rate:.2f})")
    with open(os.path.join(args.output_dir, f"{slug(label)}-seed-{seed}.txt"), "w") as f:
        f.write("\n".join(report) + "\n")
    return success_rate, final_rate, report


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_seeds(args.seeds, args.parallel)
    if args.keep_runs and os.path.exists(args.keep_runs) and not os.path.isdir(args.keep_runs):
        sys.exit(f"error: --keep-runs must be a folder, got the file {args.keep_runs}")
    for name in ("validation_episodes", "eval_episodes"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.checkpoint_frequency < 0:
        sys.exit(f"error: --checkpoint-frequency must be >= 0, got {args.checkpoint_frequency}")
    if args.ent_coef is not None and not args.ent_coef > 0:
        sys.exit(f"error: --ent-coef must be > 0, got {args.ent_coef}")
    if args.run_dir and len(args.seeds) != 1:
        seeds = " ".join(map(str, args.seeds))
        sys.exit(f"error: --run-dir is one run: give its seed alone, e.g. --seeds 1 (got --seeds {seeds})")
    if args.run_dir and not os.path.isdir(os.path.join(args.run_dir, "checkpoints")):
        sys.exit(f"error: --run-dir {args.run_dir} is not a training run's folder (no checkpoints/ in it)")
    prompt = args.prompt or clip_envs.HUMANOID_TASKS["kneeling"]
    label = args.label or (
        "ground-truth score"
        if args.reward == "ground-truth"
        else f"tiny CLIP at {args.render_size} px" + (f": {prompt!r}" if args.prompt else "")
    ) + (", centred rewards" if args.center_rewards else "")
    os.makedirs(args.output_dir, exist_ok=True)
    clip_envs.use_headless_mujoco_gl()
    random_rate = random_policy_success_rate(args.eval_episodes)
    with tempfile.TemporaryDirectory() as scratch:
        workdirs = {seed: os.path.join(args.keep_runs or scratch, f"seed-{seed}") for seed in args.seeds}
        results = run_seeds(
            lambda seed: train_and_evaluate(args, seed, prompt, label, workdirs[seed], random_rate), args.seeds, args.parallel
        )
    panels = [("success", "success (kneeling on >= half the steps)", (-0.02, 1.02)),
              ("kneeling_fraction", "kneeling fraction", (-0.02, 1.02))]  # fmt: skip
    title = f"sac_clip_humanoid.py --task kneeling, {args.render_size} px"
    plot_curves(args.output_dir, "kneeling_learning_curves.png", panels, args.block, title)
    for *_, report in results:
        print("\n".join(report))
    print("\n".join(summary_lines([chosen for chosen, *_ in results], [final for _, final, _ in results], random_rate)))
