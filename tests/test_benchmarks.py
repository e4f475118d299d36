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
