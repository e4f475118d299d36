"""bench/learning_curves.py: the learning benches' CSVs hold what was measured, and the plot is drawn from all of them."""

import csv
import os

from bench.learning_curves import plot_curves, save_curve, slug


def test_curves_round_trip_through_their_csvs_into_one_plot(tmp_path):
    label = "CLIP: 'a humanoid robot kneeling'"
    save_curve(tmp_path, label, [100, 200, 300], {"success": [0.0, 1.0, 1.0]}, {"success": 0.05})
    save_curve(tmp_path, "ground truth", [100, 200, 300], {"success": [0.0, 0.0, 1.0]}, {})
    assert slug(label) == "clip-a-humanoid-robot-kneeling"
    with open(tmp_path / f"{slug(label)}.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["step"], row["success"], row["random_success"]) for row in rows] == [
        ("100", "0.0", "0.05"),
        ("200", "1.0", "0.05"),
        ("300", "1.0", "0.05"),
    ]
    assert rows[0]["label"] == label
    plot_curves(tmp_path, "curves.png", [("success", "success", (0, 1))], 2, "title")
    assert os.path.getsize(tmp_path / "curves.png") > 10_000
