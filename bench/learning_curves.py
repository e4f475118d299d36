"""The learning benches' output: one CSV per run (a row per training episode) and a plot drawn from every CSV in a folder.

The plots in docs/results/ are drawn from these CSVs, by the bench that wrote them, so they show what the benches measured.
"""

import csv
import glob
import os
import re

import numpy as np


def slug(label):
    """A file name for a run's label."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def save_curve(output_dir, label, steps, columns, random_policy):
    """Write <slug(label)>.csv: per episode its env step and each of `columns` ({name: values}), with the random
    policy's value of each column ({name: value}; missing names are left empty)."""
    os.makedirs(output_dir, exist_ok=True)
    names = list(columns)
    with open(os.path.join(output_dir, f"{slug(label)}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "step", *names, *[f"random_{name}" for name in names]])
        for i, step in enumerate(steps):
            randoms = [random_policy.get(name, "") for name in names]
            writer.writerow([label, step, *[columns[name][i] for name in names], *randoms])


def plot_curves(output_dir, filename, panels, block, title):
    """Draw `filename` in output_dir from every CSV there: one panel per (column, panel title, y limits or None), one line
    per run, each point the mean of the last `block` episodes; the random policy's value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for path in sorted(glob.glob(os.path.join(output_dir, "*.csv"))):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        steps = np.array([int(row["step"]) for row in rows])
        for axis, (column, _, _) in zip(axes[0], panels):
            values = np.array([float(row[column]) for row in rows])
            window = min(block, len(values))
            smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
            (line,) = axis.plot(steps[window - 1 :], smoothed, label=rows[0]["label"])
            if rows[0][f"random_{column}"] != "":
                axis.axhline(float(rows[0][f"random_{column}"]), color=line.get_color(), linestyle="--", linewidth=0.8)
    for axis, (_, panel_title, limits) in zip(axes[0], panels):
        axis.set(xlabel="env steps", title=f"{panel_title}, mean of {block} episodes")
        if limits is not None:
            axis.set_ylim(*limits)
        axis.grid(alpha=0.3)
    axes[0][0].plot([], [], color="gray", linestyle="--", linewidth=0.8, label="random policy")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, filename), dpi=100)
    plt.close(fig)
