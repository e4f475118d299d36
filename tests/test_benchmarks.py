"""The benchmarks measure the setting they name: what they ask for reaches the env workers the script starts."""

import os
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
import sps  # noqa: E402


@pytest.mark.parametrize("humanoid_render", [(48, 512, 0), (40, 1024, 2)])
def test_sps_humanoid_render_reaches_every_env_worker(humanoid_render, tiny_clip_dir, tmp_path, monkeypatch):
    """bench/sps.py --humanoid-render SIZE SHADOW MULTISAMPLES: each of the --num-envs workers of sac_clip_humanoid.py
    reports rendering with exactly that (a setting patched around the script's own flags would show MuJoCo's 4096, 4)."""
    monkeypatch.chdir(tmp_path)
    args = sps.Args(num_envs=3, warmup=2, steps=2, scripts=("sac_clip_humanoid.py",), cuda=False,
                    humanoid_render=humanoid_render)  # fmt: skip
    clock, script_globals = sps.measure("sac_clip_humanoid.py", args, tiny_clip_dir)
    assert [tuple(settings) for settings in clock["worker_render"]] == [humanoid_render] * 3
    assert script_globals["args"].render_size == humanoid_render[0]
    sps.check_workers_render(clock, args)  # passes: no exit


def test_sps_refuses_a_measurement_of_another_setting(capsys):
    args = sps.Args(num_envs=2, humanoid_render=(224, 512, 0))
    with pytest.raises(SystemExit) as exit_info:
        sps.check_workers_render({"worker_render": [(224, 4096, 4), (224, 4096, 4)]}, args)
    assert "the env workers render [(224, 4096, 4), (224, 4096, 4)]" in str(exit_info.value.code)
    with pytest.raises(SystemExit):  # one env short
        sps.check_workers_render({"worker_render": [(224, 512, 0)]}, args)


def test_the_kneeling_bench_counts_seeds_on_both_sides_of_half_and_ends_with_the_chosen_checkpoints():
    from sac_tiny_clip_kneeling import summary_lines

    final_policy, seeds_at_half, chosen = summary_lines([0.5, 0.45, 1.0, 0.55], [0.49, 0.5, 0.2, 0.0], 0.05)
    assert final_policy == (
        "the final policy's (no choosing) success rate 0.30 ± 0.21 over 4 seeds (each 0.49 0.50 0.20 0.00; random 0.05)"
    )
    assert seeds_at_half == "success >= 0.5 in 3 of 4 seeds (the chosen checkpoint), 1 of 4 (the final policy)"
    assert chosen == "final success rate 0.62 ± 0.22 over 4 seeds (each 0.50 0.45 1.00 0.55; random 0.05)"


def test_the_kneeling_bench_evaluates_each_distinct_checkpoint_once_and_gives_every_pick_its_own():
    from sac_tiny_clip_kneeling import evaluate_once

    calls = []

    def evaluate_checkpoint(name, path):
        calls.append((name, path))
        return [f"success rate of {path}"]

    picks = {"validated": "step_96.pt", "paper": "step_150.pt", "final": "step_150.pt"}
    evaluations = evaluate_once(picks, evaluate_checkpoint)
    assert calls == [("validated", "step_96.pt"), ("paper", "step_150.pt")]
    assert evaluations == {name: [f"success rate of {path}"] for name, path in picks.items()}
    calls.clear()
    evaluate_once({"validated": "a.pt", "paper": "b.pt", "final": "c.pt"}, evaluate_checkpoint)
    assert [path for _, path in calls] == ["a.pt", "b.pt", "c.pt"]
