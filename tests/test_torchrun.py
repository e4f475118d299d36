"""One run over several processes with PyTorch's torchrun (gloo on the CPU, 2 processes): each process steps, renders
and scores its own share of the envs, gradients are averaged into one learner, and rank 0 alone writes."""

import glob
import os
import signal
import sys

import numpy as np
import pytest
import torch

import clip_envs
import clip_reward
from conftest import REPO_ROOT
from helpers import exit_message, logged, read_scalars, run_script, start_script, wait_for_checkpoint
from test_dqn_clip_cartpole import learn_from_the_tiny_clip, random_policy_rollouts

TINY_MOUNTAINCAR_CLIP = f"{REPO_ROOT}/assets/tiny-mountaincar-clip-for-tests"
TOTAL, NUM_ENVS, EPISODE_LENGTH = 800, 4, 200  # each env: one whole episode, no autoreset step, so 800 transitions
ARGS = ["--clip-model", f"local-dir:{TINY_MOUNTAINCAR_CLIP}", "--total-timesteps", TOTAL, "--num-envs", NUM_ENVS,
        "--episode-length", EPISODE_LENGTH, "--learning-starts", 200, "--batch-size", 32, "--train-frequency", 5,
        "--gradient-steps", 10, "--buffer-size", 2000, "--checkpoint-frequency", 400, "--checkpoint-buffer", "--seed", 3]


# Runs the script as torchrun would, then saves the networks this rank ended with (outside the run's folder).
SPY = """
import os, runpy, sys
import torch
sys.argv[0] = {script!r}
names = runpy.run_path({script!r}, run_name="__main__")
networks = {{name: names[name].state_dict() for name in ("actor", "qf1", "qf2", "qf1_target", "qf2_target")}}
torch.save(networks, os.path.join({out!r}, "networks_rank" + os.environ["RANK"] + ".pt"))
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    cwd, spy = tmp_path_factory.mktemp("torchrun"), tmp_path_factory.mktemp("spy")
    (spy / "spy.py").write_text(SPY.format(script=os.path.join(REPO_ROOT, "sac_clip_mountaincar.py"), out=str(spy)))
    result = run_script(str(spy / "spy.py"), [*ARGS, "--capture-video", "--save-model"], cwd, processes=2)
    assert result.returncode == 0, result.stderr
    (run_dir,) = glob.glob(str(cwd / "runs" / "*"))
    return cwd, run_dir, result, spy


def test_only_rank_0_writes(two_process_run):
    """One run folder with one TensorBoard file, one set of checkpoints, one model, the video of env 0, and the
    setup line and progress of rank 0 only, and the episodes of rank 0's envs only (two of the four)."""
    cwd, run_dir, result, _ = two_process_run
    assert sorted(os.listdir(cwd)) == ["runs", "videos"]
    name = os.path.basename(run_dir)
    assert sorted(os.listdir(run_dir)) == sorted(["checkpoints", "sac_clip_mountaincar.cleanrl_model",
                                                  *[f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents")]])
    assert len(glob.glob(f"{run_dir}/events.out.tfevents*")) == 1
    assert sorted(os.listdir(f"{run_dir}/checkpoints")) == ["buffer_000000800.pt", "step_000000400.pt", "step_000000800.pt"]
    assert os.listdir(cwd / "videos") == [name] and glob.glob(str(cwd / "videos" / name / "*.mp4"))
    (setup,) = [line for line in result.stdout.splitlines() if line.startswith("running on")]
    assert setup.startswith("running on 2 processes (gloo), rank 0 on cpu: 2 envs per process (worker processes), CLIP ")
    assert result.stdout.count(f"global_step={TOTAL}/{TOTAL},") == 1  # the last progress line, once
    scalars, _, _ = read_scalars(cwd)
    assert len(scalars["charts/episodic_clip_return"]) == NUM_ENVS // 2
    assert "losses/qf1_loss" in scalars
    assert "Traceback" not in result.stderr


def test_the_ranks_end_with_the_same_networks_the_run_saved(two_process_run):
    """Averaged gradients keep one learner: both processes hold the same networks after 300 SAC updates, each on its own
    halves of the batch, and they are the ones the run saved."""
    _, run_dir, _, spy = two_process_run
    rank0, rank1 = (torch.load(spy / f"networks_rank{rank}.pt") for rank in (0, 1))
    torch.testing.assert_close(rank0, rank1, rtol=0, atol=0)
    actor, qf1, qf2 = torch.load(f"{run_dir}/sac_clip_mountaincar.cleanrl_model")
    torch.testing.assert_close((rank0["actor"], rank0["qf1"], rank0["qf2"]), (actor, qf1, qf2), rtol=0, atol=0)


def test_each_rank_steps_its_own_envs_and_scores_its_own_frames(two_process_run):
    """Rank r runs envs 2r and 2r+1 with the seeds they have in one process; together the ranks take the requested
    steps; and every stored reward is the CLIP reward of the frame that rank's env showed after the action."""
    _, run_dir, _, _ = two_process_run
    checkpoint = torch.load(f"{run_dir}/checkpoints/step_000000800.pt", weights_only=False)
    buffers = torch.load(f"{run_dir}/checkpoints/buffer_000000800.pt")["ranks"]
    assert len(checkpoint["ranks"]) == len(buffers) == 2
    assert [buffer["pos"] for buffer in buffers] == [TOTAL // 2, TOTAL // 2]  # together: --total-timesteps

    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", EPISODE_LENGTH,
                                     clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    model = clip_reward.load_reward_model(f"local-dir:{TINY_MOUNTAINCAR_CLIP}", [clip_envs.PROMPTS["mountaincar"][0]],
                                          [clip_envs.PROMPTS["mountaincar"][1]], alpha=0.5, device="cpu")
    for rank, buffer in enumerate(buffers):
        for i in range(2):  # transitions alternate between the rank's two envs
            first_obs, _ = env.reset(seed=3 + 2 * rank + i)
            np.testing.assert_array_equal(buffer["obs"][i].numpy(), first_obs)
        frames = []
        for next_obs in buffer["next_obs"][::16].numpy():
            env.unwrapped.state = next_obs.astype(np.float64)
            frames.append(env.render())
        expected = model(np.stack(frames)).numpy()
        np.testing.assert_allclose(buffer["rewards"][::16].numpy(), expected, atol=1e-5)
    assert not np.allclose(buffers[0]["rewards"].numpy(), buffers[1]["rewards"].numpy())
    env.close()


def test_a_two_process_run_stopped_by_sigterm_resumes_to_the_same_logs(two_process_run, tmp_path):
    """SIGTERM to torchrun and its processes (a scheduler's stop): every rank stops at the same step, rank 0 writes one
    checkpoint with each rank's envs and buffer, and a resumed two-process run logs exactly what the run that was never
    interrupted logged."""
    uninterrupted, _, _, _ = two_process_run
    process = start_script("sac_clip_mountaincar.py", ARGS, tmp_path, processes=2)
    wait_for_checkpoint(process, tmp_path)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert stderr.count("stopped by SIGTERM at step") == 1, stderr  # said once, by rank 0
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    stopped_at = max(int(path[-12:-3]) for path in glob.glob(f"{run_dir}/checkpoints/step_*.pt"))
    assert 400 < stopped_at < TOTAL, "the run did not stop between its checkpoints: nothing was tested"
    assert os.path.exists(f"{run_dir}/checkpoints/buffer_{stopped_at:09d}.pt")

    result = run_script("sac_clip_mountaincar.py", ["--resume", run_dir], tmp_path, processes=2)
    assert result.returncode == 0, result.stderr
    assert f"(step {stopped_at})" in result.stdout
    expected, resumed = logged(uninterrupted), logged(tmp_path)
    assert any(step > stopped_at for values in expected.values() for step, _ in values)
    assert resumed == expected


def test_a_run_resumes_only_with_as_many_processes(two_process_run, monkeypatch):
    cwd, run_dir, _, _ = two_process_run
    message = exit_message("sac_clip_mountaincar.py", ["--resume", run_dir], cwd, monkeypatch, new_run=False)
    assert "the run had 2 processes; resume it with as many" in message


@pytest.mark.parametrize("script", ["dqn_clip_cartpole.py", "sac_clip_mountaincar.py", "sac_clip_humanoid.py",
                                    "sac_clip_continuous_action.py"])  # fmt: skip
def test_envs_and_batch_must_divide_among_the_processes(script, tiny_clip_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before any process group
    given = ["--clip-model", tiny_clip_spec, *(["--prompt", "a pole upright"] if "continuous" in script else [])]
    message = exit_message(script, [*given, "--num-envs", 3], tmp_path, monkeypatch)
    assert "--num-envs must be a multiple of the 2 processes, got 3" in message
    message = exit_message(script, [*given, "--num-envs", 4, "--batch-size", 33], tmp_path, monkeypatch)
    assert "--batch-size must be a multiple of the 2 processes, got 33" in message


def test_under_torchrun_a_bad_input_is_printed_by_rank_0_alone(tiny_clip_spec, tmp_path, monkeypatch):
    """Every process checks the same input; rank 0 prints the one line, the others exit with status 1 in silence."""
    import runpy

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # rank > 0 sends its stdout to /dev/null; put it back afterwards
    monkeypatch.setattr(sys, "argv", ["sac_clip_humanoid.py", "--clip-model", tiny_clip_spec, "--num-envs", "3"])
    monkeypatch.chdir(tmp_path)
    for rank, expected in (("0", "error: --num-envs must be a multiple of the 2 processes, got 3"), ("1", 1)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(os.path.join(REPO_ROOT, "sac_clip_humanoid.py"), run_name="__main__")
        assert exit_info.value.code == expected


def test_two_processes_learn_cartpole_from_the_tiny_clip_as_one_process_does(tmp_path):
    """The one-process learning run of test_dqn_clip_cartpole.py (4 envs, the tiny CartPole CLIP as the only reward),
    over two processes of two envs each, clears the same bar: the pole balanced, evaluate.py's success >= 0.8."""
    upright = "pole vertically upright on top of the cart"
    learned, clip_returns, success_rate = learn_from_the_tiny_clip([upright], tmp_path, processes=2)[upright]
    random_returns, _ = random_policy_rollouts(20, episode_length=200)
    assert learned > 100 and learned > 4 * random_returns.mean(), (learned, random_returns.mean())
    assert np.mean(clip_returns[-8:]) > np.mean(clip_returns[:8]) + 20
    assert success_rate >= 0.8


def test_a_two_process_humanoid_run(tiny_clip_spec, tmp_path):
    """The humanoid over two processes (each with its own MuJoCo renderers in its env workers): it completes, logs the
    task's success and pose scalars once, and its checkpoint holds both processes' envs and episodes in progress."""
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 160, "--num-envs", 4, "--episode-length", 30,
            "--render-size", 48, "--learning-starts", 60, "--batch-size", 16, "--train-frequency", 4, "--gradient-steps", 20,
            "--hidden-sizes", 32, 32, "--buffer-size", 1000]
    result = run_script("sac_clip_humanoid.py", args, tmp_path, processes=2)
    assert result.returncode == 0, result.stderr
    scalars, _, run_dir = read_scalars(tmp_path)
    assert len(scalars["charts/success"]) == len(scalars["pose/kneeling"]) == 2  # an episode of each of rank 0's 2 envs
    assert "losses/qf1_loss" in scalars
    checkpoint = torch.load(f"{run_dir}/checkpoints/step_000000160.pt", weights_only=False)
    assert [len(state["envs"]) for state in checkpoint["ranks"]] == [2, 2]
    assert [len(state["episode_sums"]["kneeling"]) for state in checkpoint["ranks"]] == [2, 2]


def test_a_two_process_run_on_any_env(tiny_clip_spec, tmp_path):
    """sac_clip_continuous_action.py on InvertedPendulum (episodes of its own length, ended by terminations) over two
    processes: it completes, rank 0 logs its own envs' episodes, and the checkpoint holds both processes' envs."""
    args = ["--clip-model", tiny_clip_spec, "--env-id", "InvertedPendulum-v5", "--prompt", "a pole balanced upright",
            "--render-size", 48, "--total-timesteps", 160, "--num-envs", 4, "--learning-starts", 60, "--batch-size", 16,
            "--gradient-steps", 8, "--buffer-size", 1000]  # fmt: skip
    result = run_script("sac_clip_continuous_action.py", args, tmp_path, processes=2)
    assert result.returncode == 0, result.stderr
    scalars, _, run_dir = read_scalars(tmp_path)
    assert len(scalars["charts/episodic_return"]) > 2 and "losses/qf1_loss" in scalars
    assert all(value == length - 1 for value, length in zip(scalars["charts/episodic_return"], scalars["charts/episodic_length"]))
    checkpoint = torch.load(f"{run_dir}/checkpoints/step_000000160.pt", weights_only=False)
    assert [len(state["envs"]) for state in checkpoint["ranks"]] == [2, 2]


def test_a_checkpoint_without_per_process_state_is_refused_in_one_line(tmp_path, monkeypatch):
    """Checkpoints written before per-process state (checkpoint["ranks"]) cannot resume: one line, not a KeyError."""
    (tmp_path / "runs" / "old" / "checkpoints").mkdir(parents=True)
    torch.save({"args": {}, "global_step": 100}, tmp_path / "runs" / "old" / "checkpoints" / "step_000000100.pt")
    message = exit_message("dqn_clip_cartpole.py", ["--resume", "runs/old"], tmp_path, monkeypatch, new_run=False)
    assert "step_000000100.pt was written by an older version of this script" in message
