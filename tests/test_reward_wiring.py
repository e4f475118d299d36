"""Every training script: the reward stored with a transition is the CLIP reward of the frame the env
shows after that action, and the same seed gives the same run.

The wiring tests run a script in this process (runpy, in-process envs) with two spies that change nothing: one on
the vector env's step renders the envs right after the real step (what they show then), one on the reward
model records the frames it scored and the rewards it gave. The replay buffer is read from the finished
script's globals. A script that scores the frame before the step, hands CLIP BGR frames or another env's
frame, or stores the env's own reward fails here.
"""

import glob
import os
import runpy
import sys
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import clip_reward
from conftest import REPO_ROOT
from helpers import read_scalars, run_script

# Short runs that cross episode ends (the autoreset step), reach the learner's own actions and log losses.
RUNS = {
    "dqn_clip_cartpole.py": ["--total-timesteps", 240, "--num-envs", 2, "--episode-length", 40, "--learning-starts", 100,
                             "--buffer-size", 1000],
    "sac_clip_mountaincar.py": ["--total-timesteps", 240, "--num-envs", 2, "--episode-length", 40, "--learning-starts", 100,
                                "--train-frequency", 5, "--gradient-steps", 20, "--batch-size", 16, "--buffer-size", 1000],
    "sac_clip_humanoid.py": ["--total-timesteps", 120, "--num-envs", 2, "--episode-length", 25, "--learning-starts", 60,
                             "--train-frequency", 5, "--gradient-steps", 40, "--batch-size", 16, "--buffer-size", 1000,
                             "--render-size", 96, "--render-quality", 512, 0],
    # any gymnasium env: episodes end as the env ends them (Pendulum's time limit; InvertedPendulum's terminations)
    "sac_clip_continuous_action.py Pendulum-v1": ["--env-id", "Pendulum-v1", "--prompt", "a pendulum pointing straight up",
                                                  "--total-timesteps", 440, "--num-envs", 2, "--learning-starts", 100,
                                                  "--batch-size", 16, "--buffer-size", 1000, "--gradient-steps", 2],
    "sac_clip_continuous_action.py InvertedPendulum-v5": ["--env-id", "InvertedPendulum-v5", "--prompt", "a pole upright",
                                                          "--total-timesteps", 120, "--num-envs", 2, "--learning-starts", 60,
                                                          "--batch-size", 16, "--buffer-size", 1000, "--gradient-steps", 2],
}  # fmt: skip


def script_of(run):
    return run.split()[0]


def run_with_spies(script, args, cwd, monkeypatch):
    """Run a training script in this process; returns its globals and what the spies saw."""
    seen = SimpleNamespace(shown=[], next_obs=[], ended=[], terminated=[], scored=[], rewards=[])
    real_step, real_score = gym.vector.SyncVectorEnv.step, clip_reward.CLIPReward.score

    def step(self, actions):
        next_obs, rewards, terminations, truncations, infos = real_step(self, actions)
        # rendered afresh under clip_envs.FrameInInfo (whose render() returns the frame it handed out with the step)
        seen.shown.append(np.stack([env.env.render() for env in self.envs]))
        seen.next_obs.append(next_obs.copy())
        seen.ended.append(terminations | truncations)
        seen.terminated.append(terminations.copy())
        return next_obs, rewards, terminations, truncations, infos

    def score(self, frames):
        rewards, along, off = real_score(self, frames)
        seen.scored.append(np.array(frames))
        seen.rewards.append(rewards.cpu().numpy())
        return rewards, along, off

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", step)
    monkeypatch.setattr(clip_reward.CLIPReward, "score", score)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, "--no-cuda", "--no-async-envs", *map(str, args)])  # spies see in-process envs
    return runpy.run_path(os.path.join(REPO_ROOT, script), run_name="__main__"), seen


@pytest.mark.parametrize("run", RUNS)
def test_each_transition_stores_the_clip_reward_of_the_frame_after_its_action(run, tiny_clip_spec, tmp_path, monkeypatch):
    script = script_of(run)
    script_globals, seen = run_with_spies(script, ["--clip-model", tiny_clip_spec, *RUNS[run]], tmp_path, monkeypatch)
    num_envs = script_globals["args"].num_envs
    num_steps = script_globals["args"].total_timesteps // num_envs

    # CLIP scored one batch per vector step: exactly the frames the envs showed after that step, in env order, RGB.
    assert len(seen.scored) == len(seen.shown) == num_steps
    for step, (scored, shown) in enumerate(zip(seen.scored, seen.shown)):
        assert scored.shape == shown.shape and np.array_equal(scored, shown), f"vector step {step}: CLIP saw another frame"
    assert not np.array_equal(seen.shown[1], seen.shown[2])  # the frames change from step to step, so the test can tell

    # Each stored transition's reward is the one CLIP gave the frame of its next observation.
    rb = script_globals["rb"]
    reward_of_next_obs = {
        next_obs.astype(rb.next_obs.dtype).tobytes(): reward
        for step_next_obs, step_rewards in zip(seen.next_obs, seen.rewards)
        for next_obs, reward in zip(step_next_obs, step_rewards)
    }
    stored = [reward_of_next_obs.get(next_obs.tobytes()) for next_obs in rb.next_obs[: rb.pos]]
    assert None not in stored, "a stored next observation the envs never returned"
    np.testing.assert_array_equal(rb.rewards[: rb.pos], np.array(stored, dtype=np.float32))
    # ... one transition per env and step, except the step that resets a finished episode.
    resets = sum(ended.sum() for ended in seen.ended[:-1])
    assert rb.pos == num_steps * num_envs - resets and resets > 0
    assert len(set(rb.rewards[: rb.pos].tolist())) > rb.pos // 2  # CLIP rewards, not an env's constant per-step reward
    if "InvertedPendulum" in run:  # the env's own terminations end episodes: stored as terminal, with their own frame
        assert rb.dones[: rb.pos].sum() == sum(info_ended.sum() for info_ended in seen.terminated[:-1]) > 0
    if script == "sac_clip_humanoid.py":  # --render-quality reaches the envs CLIP sees
        quality = script_globals["envs"].envs[0].unwrapped.model.vis.quality
        assert (quality.shadowsize, quality.offsamples) == (512, 0)


@pytest.mark.parametrize("run", [run for run in RUNS if "InvertedPendulum" not in run])
def test_same_seed_gives_the_same_run(run, tiny_clip_spec, tmp_path):
    """CleanRL's --torch-deterministic promise on a CPU: two runs log the same rewards and losses and save the same networks."""
    logged, saved = [], []
    for attempt in ("first", "second"):
        cwd = tmp_path / attempt
        cwd.mkdir()
        result = run_script(script_of(run), ["--clip-model", tiny_clip_spec, *RUNS[run], "--save-model", "--seed", 7], cwd)
        assert result.returncode == 0, result.stderr
        scalars, _, run_dir = read_scalars(cwd)
        logged.append({tag: values for tag, values in scalars.items() if tag != "charts/SPS"})
        (model_path,) = glob.glob(os.path.join(run_dir, "*.cleanrl_model"))
        saved.append(torch.load(model_path))
    first, second = logged
    assert "charts/episodic_clip_return" in first and any(tag.startswith("losses/") for tag in first)
    assert first.keys() == second.keys()
    for tag in first:
        assert first[tag] == second[tag], tag
    torch.testing.assert_close(saved[0], saved[1], rtol=0, atol=0)


def test_humanoid_ground_truth_run_stores_the_tasks_score_of_each_next_state(tmp_path, monkeypatch):
    """sac_clip_humanoid.py --reward ground-truth: no CLIP and no frames; each stored reward is the task's ground-truth
    score (clip_envs.task_scores) of the state its next observation shows, recomputed here from that observation."""
    import mujoco

    import clip_envs

    args = ["--reward", "ground-truth", "--task", "kneeling", *RUNS["sac_clip_humanoid.py"]]
    script_globals, seen = run_with_spies("sac_clip_humanoid.py", args, tmp_path, monkeypatch)
    assert seen.scored == [] and script_globals["reward_model"] is None
    assert "frame" not in script_globals["infos"]
    rb = script_globals["rb"]
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    truth = []
    for next_obs in rb.next_obs[: rb.pos]:  # Humanoid-v5's observation starts with qpos[2:] and qvel
        data.qpos[2:], data.qvel[:] = next_obs[: model.nq - 2], next_obs[model.nq - 2 : model.nq - 2 + model.nv]
        mujoco.mj_forward(model, data)
        truth.append(clip_envs.task_scores(data)["kneeling"])
    env.close()
    np.testing.assert_allclose(rb.rewards[: rb.pos], truth, rtol=2e-3)  # float32 observations
    assert len(set(np.round(truth, 4))) > rb.pos // 2 and max(truth) <= 1.0  # a score that varies with the pose
