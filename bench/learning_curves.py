"""The learning benches' seeds and output: runs over seeds side by side, one CSV per run (a row per training episode),
the summary line over seeds, and a banded plot per configuration drawn from every CSV in a folder.

The plots in docs/results/ are drawn from these CSVs, by the bench that wrote them, so they show what the benches measured.
"""

import csv
import glob
import os
import re
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def slug(label):
    """A file name for a run's label."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def curve_path(output_dir, label, seed):
    """Where save_curve writes the curve of `label` at `seed`."""
    return os.path.join(output_dir, f"{slug(label)}-seed-{seed}.csv")


def save_curve(output_dir, label, seed, steps, columns, random_policy):
    """Write <slug(label)>-seed-<seed>.csv: per episode its env step and each of `columns` ({name: values}), with the
    random policy's value of each column ({name: value}; missing names are left empty)."""
    os.makedirs(output_dir, exist_ok=True)
    names = list(columns)
    with open(curve_path(output_dir, label, seed), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "seed", "step", *names, *[f"random_{name}" for name in names]])
        for i, step in enumerate(steps):
            randoms = [random_policy.get(name, "") for name in names]
            writer.writerow([label, seed, step, *[columns[name][i] for name in names], *randoms])


def check_seeds(seeds, parallel):
    """Exit with a one-line error unless --seeds are one or more distinct seeds and --parallel is at least 1."""
    if not seeds:
        raise SystemExit("error: --seeds needs at least one seed, e.g. --seeds 1 2 3")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds must be distinct, got {' '.join(map(str, seeds))}")
    if parallel < 1:
        raise SystemExit(f"error: --parallel must be >= 1, got {parallel}")


def run_seeds(run_one, seeds, parallel):
    """[run_one(seed) for seed in seeds], at most `parallel` at once (each run's work is its own processes)."""
    check_seeds(seeds, parallel)
    with ThreadPoolExecutor(max_workers=min(parallel, len(seeds))) as pool:
        return list(pool.map(run_one, seeds))


def train_in(workdir, command, parallel):
    """Run a training command in workdir, with one torch thread when `parallel` runs share the cores; its own error
    (stderr) shows above the one-line exit if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1") if parallel > 1 else None
    if subprocess.run(command, cwd=workdir, stdout=subprocess.DEVNULL, env=env).returncode:
        seed = command[command.index("--seed") + 1] if "--seed" in command else "?"
        raise SystemExit(f"error: {os.path.basename(command[1])} (seed {seed}) failed; its error is above")


def blocks(values, block):
    """The mean of each block of `block` episodes."""
    return [float(np.mean(values[i : i + block])) for i in range(0, len(values), block)]


def summary_line(name, values, random_value, of="final"):
    """`final <name> M ± S over N seeds (each a b c; random Y)`: the mean and the population standard deviation
    (numpy's default, ddof 0) of each seed's final value, each listed in seed order; `of` names what was measured."""
    values = np.asarray(values, dtype=float)
    each = " ".join(f"{value:.2f}" for value in values)
    seeds = "seed" if len(values) == 1 else "seeds"
    return (
        f"{of} {name} {values.mean():.2f} ± {values.std():.2f} over {len(values)} {seeds} "
        f"(each {each}; random {random_value:.2f})"
    )


def read_curves(output_dir):
    """{label: {seed: rows}} of every CSV in output_dir (not its subfolders)."""
    curves = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(output_dir, "*.csv"))):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        curves[rows[0]["label"]][int(rows[0]["seed"])] = rows
    return curves


def banded(runs, column, block):
    """(steps, mean, min, max) over seeds of each run's `column` smoothed as the mean of its last `block` episodes, on
    the first seed's steps up to where the shortest run ends."""
    smoothed = []
    for rows in runs:
        steps = np.array([int(row["step"]) for row in rows])
        values = np.array([float(row[column]) for row in rows])
        window = min(block, len(values))
        smoothed.append((steps[window - 1 :], np.convolve(values, np.ones(window) / window, mode="valid")))
    end = min(steps[-1] for steps, _ in smoothed)
    grid = smoothed[0][0][smoothed[0][0] <= end]
    on_grid = np.array([np.interp(grid, steps, values) for steps, values in smoothed])
    return grid, on_grid.mean(axis=0), on_grid.min(axis=0), on_grid.max(axis=0)


def plot_curves(output_dir, filename, panels, block, title):
    """Draw `filename` in output_dir from every CSV there: one panel per (column, panel title, y limits or None), per
    configuration (label) the mean over its seeds with the band from the lowest to the highest seed shaded, each point
    the mean of the last `block` episodes; the random policy's value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for label, by_seed in read_curves(output_dir).items():
        runs = [by_seed[seed] for seed in sorted(by_seed)]
        seeds = ", ".join(map(str, sorted(by_seed)))
        for axis, (column, _, _) in zip(axes[0], panels):
            steps, mean, low, high = banded(runs, column, block)
            legend = f"{label} (seed{'s' if len(runs) > 1 else ''} {seeds})"
            (line,) = axis.plot(steps, mean, label=legend)
            axis.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            if runs[0][0][f"random_{column}"] != "":
                axis.axhline(float(runs[0][0][f"random_{column}"]), color=line.get_color(), linestyle="--", linewidth=0.8)
    for axis, (_, panel_title, limits) in zip(axes[0], panels):
        axis.set(xlabel="env steps", title=f"{panel_title}, mean of {block} episodes")
        if limits is not None:
            axis.set_ylim(*limits)
        axis.grid(alpha=0.3)
    axes[0][0].plot([], [], color="gray", linestyle="--", linewidth=0.8, label="random policy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}\nline: mean over seeds; band: lowest to highest seed")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, filename), dpi=100)
    plt.close(fig)
