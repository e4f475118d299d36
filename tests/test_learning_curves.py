"""bench/learning_curves.py: the learning benches' CSVs hold what was measured, the summary line states each seed, and
the banded plot is drawn from all of them."""

import csv
import os
import threading
import time

import numpy as np
import pytest

from bench.learning_curves import banded, curve_path, plot_curves, read_curves, run_seeds, save_curve, slug, summary_line


def test_curves_round_trip_through_their_csvs_one_per_seed(tmp_path):
    label = "CLIP: 'a humanoid robot kneeling'"
    save_curve(tmp_path, label, 1, [100, 200, 300], {"success": [0.0, 1.0, 1.0]}, {"success": 0.05})
    save_curve(tmp_path, label, 2, [100, 200, 300], {"success": [0.0, 0.0, 1.0]}, {"success": 0.05})
    save_curve(tmp_path, "ground truth", 1, [100, 200, 300], {"success": [0.0, 0.0, 1.0]}, {})
    assert slug(label) == "clip-a-humanoid-robot-kneeling"
    assert curve_path(tmp_path, label, 2) == os.path.join(tmp_path, "clip-a-humanoid-robot-kneeling-seed-2.csv")
    with open(curve_path(tmp_path, label, 1)) as f:
        rows = list(csv.DictReader(f))
    assert [(row["seed"], row["step"], row["success"], row["random_success"]) for row in rows] == [
        ("1", "100", "0.0", "0.05"),
        ("1", "200", "1.0", "0.05"),
        ("1", "300", "1.0", "0.05"),
    ]
    assert rows[0]["label"] == label
    curves = read_curves(tmp_path)
    assert sorted(curves) == [label, "ground truth"] and sorted(curves[label]) == [1, 2]
    assert curves["ground truth"][1][2]["random_success"] == ""


def test_the_band_is_the_mean_lowest_and_highest_seed_of_the_smoothed_curves_up_to_the_shortest_run(tmp_path):
    save_curve(tmp_path, "a", 1, [10, 20, 30, 40], {"success": [0.0, 1.0, 1.0, 0.0]}, {})
    save_curve(tmp_path, "a", 2, [10, 20, 30], {"success": [1.0, 1.0, 0.0]}, {})  # stopped earlier
    runs = [read_curves(tmp_path)["a"][seed] for seed in (1, 2)]
    steps, mean, low, high = banded(runs, "success", block=2)  # each point: the mean of the last 2 episodes
    assert steps.tolist() == [20, 30]  # seed 2 ends at 30
    assert np.allclose(low, [0.5, 0.5]) and np.allclose(high, [1.0, 1.0]) and np.allclose(mean, [0.75, 0.75])
    steps, mean, low, high = banded(runs[:1], "success", block=1)
    assert steps.tolist() == [10, 20, 30, 40] and np.array_equal(mean, low) and np.array_equal(mean, high)


def test_the_plot_draws_a_band_per_configuration(tmp_path):
    for seed, values in [(1, [0.0, 1.0, 1.0]), (2, [0.0, 0.0, 1.0])]:
        save_curve(tmp_path, "tiny CLIP", seed, [100, 200, 300], {"success": values}, {"success": 0.05})
    plot_curves(tmp_path, "curves.png", [("success", "success", (0, 1))], 1, "title")
    assert os.path.getsize(tmp_path / "curves.png") > 10_000


def test_the_summary_line_gives_mean_std_and_each_seed_in_seed_order():
    line = summary_line("success rate", [0.55, 0.05, 0.90], 0.0)
    assert line == "final success rate 0.50 ± 0.35 over 3 seeds (each 0.55 0.05 0.90; random 0.00)"
    assert summary_line("success rate", [1.0], 0.02) == "final success rate 1.00 ± 0.00 over 1 seed (each 1.00; random 0.02)"
    last = summary_line("success rate", [0.1, 0.3], 0.0, of="the final policy's")
    assert last == "the final policy's success rate 0.20 ± 0.10 over 2 seeds (each 0.10 0.30; random 0.00)"


def test_seeds_run_side_by_side_up_to_parallel_and_come_back_in_seed_order():
    running, most = [], []
    lock = threading.Lock()

    def run_one(seed):
        with lock:
            running.append(seed)
            most.append(len(running))
        time.sleep(0.3 if seed == 1 else 0.05)  # seed 1 finishes last
        with lock:
            running.remove(seed)
        return seed * 10

    assert run_seeds(run_one, (1, 2, 3), parallel=3) == [10, 20, 30]
    assert max(most) == 3
    most.clear()
    assert run_seeds(run_one, (3, 1, 2), parallel=1) == [30, 10, 20]
    assert max(most) == 1
    with pytest.raises(SystemExit, match="--seeds must be distinct, got 1 1"):
        run_seeds(run_one, (1, 1), parallel=2)
    with pytest.raises(SystemExit, match="--parallel must be >= 1, got 0"):
        run_seeds(run_one, (1,), parallel=0)
