"""sac_clip_humanoid.py: pose indicators on hand-set poses, an end-to-end run with the paper's scene, errors."""

import glob
import os

import numpy as np
import pytest
import torch
from moviepy import VideoFileClip

import clip_envs
from helpers import assert_finite, exit_message, read_scalars, run_script
from test_clip_envs import KNEELING, set_pose

SCRIPT = "sac_clip_humanoid.py"
EPISODE_LENGTH = 40

@pytest.fixture(scope="module")
def clip_run(tiny_clip_spec, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sac_humanoid")
    args = ["--clip-model", tiny_clip_spec, "--total-timesteps", 240, "--num-envs", 2, "--episode-length", EPISODE_LENGTH,
            "--learning-starts", 60, "--batch-size", 32, "--capture-video", "--save-model", "--task", "lotus"]
    result = run_script(SCRIPT, args, cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_clip_run_logs_clip_reward_task_success_and_losses(clip_run):
    cwd, result = clip_run
    scalars, events, _ = read_scalars(cwd)
    tags = ["charts/episodic_return", "charts/episodic_clip_return", "charts/task_fraction", "charts/success",
            "pose/torso_height", "pose/head_height", "charts/SPS", "losses/qf1_loss", "losses/actor_loss", "losses/ent_coef"]
    for tag in tags + [f"pose/{task}" for task in clip_envs.HUMANOID_TASKS]:
        assert_finite(scalars.get(tag))
    assert scalars["charts/episodic_length"] == [EPISODE_LENGTH] * 4  # 2 envs x 120 steps / 41 steps each
    assert all(0.0 < h < 1.6 for h in scalars["pose/torso_height"])
    # --task lotus: its fraction is the task fraction, and success is that fraction reaching one half.
    np.testing.assert_allclose(scalars["charts/task_fraction"], scalars["pose/lotus"])
    np.testing.assert_array_equal(scalars["charts/success"], (np.array(scalars["pose/lotus"]) >= 0.5).astype(float))
    for task in clip_envs.HUMANOID_TASKS:
        assert all(0.0 <= f <= 1.0 for f in scalars[f"pose/{task}"])
    # The CLIP reward of a unit-norm embedding lies in [-1, 1] per step; the env's own is the task's score, in (0, 1].
    assert all(abs(r) <= EPISODE_LENGTH for r in scalars["charts/episodic_clip_return"])
    assert all(0 < r <= EPISODE_LENGTH for r in scalars["charts/episodic_return"])
    assert scalars["charts/episodic_return"] != scalars["charts/episodic_clip_return"]
    hyperparameters = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|alpha|0.0|" in hyperparameters and "|camera|(3.5, -10.0, 180.0, 1.0)|" in hyperparameters
    assert "|task|lotus|" in hyperparameters and f"|prompt|('{clip_envs.HUMANOID_TASKS['lotus']}',)|" in hyperparameters
    assert "|render_size|480|" in hyperparameters and "|train_frequency|100|" in hyperparameters
    assert "lotus=" in result.stdout and "SPS=" in result.stdout


def test_task_predicates_reach_the_logs_through_the_info_dict():
    """What the script sums per episode is clip_envs.task_success of the state after each step."""
    env = clip_envs.make_humanoid("Humanoid-v5", 100, None, render_size=32)
    env.reset(seed=0)
    set_pose(env, **KNEELING)
    _, _, _, _, info = env.step(np.zeros(17))
    assert {task: info[task] for task in clip_envs.HUMANOID_TASKS} == clip_envs.task_success(env.unwrapped.data)
    assert info["torso_height"] == pytest.approx(env.unwrapped.data.body("torso").xpos[2])
    env.close()


def test_first_episode_starts_upright_and_falls(clip_run):
    """No early termination: under a random policy the humanoid falls, and the episode goes on."""
    cwd, _ = clip_run
    scalars, _, _ = read_scalars(cwd)
    assert scalars["pose/torso_height"][0] < 1.4  # mean over the episode, below the start height


def test_clip_run_saves_a_480_pixel_video_and_the_policy(clip_run):
    """Videos are recorded at the render size, big enough to judge a pose, not at the tiny CLIP's 32 px."""
    cwd, _ = clip_run
    (video, *_) = sorted(glob.glob(os.path.join(cwd, "videos", "*", "*.mp4")))
    clip = VideoFileClip(video)
    assert list(clip.size) == [480, 480]
    clip.close()
    (model_path,) = glob.glob(os.path.join(cwd, "runs", "*", "sac_clip_humanoid.cleanrl_model"))
    actor_state, qf1_state, _ = torch.load(model_path)
    assert actor_state["fc_mean.weight"].shape == (17, 256)  # Humanoid has 17 actuators
    assert qf1_state["fc1.weight"].shape[1] == 348 + 17


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "1.2"], "alpha must be in [0, 1]"),
        (["--camera", "0", "-10", "90", "0.8"], "--camera takes DISTANCE"),
        (["--camera", "nan", "-10", "90", "0.8"], "--camera takes DISTANCE"),
        (["--prompt", ""], "--prompt must be one or more sentences, none of them blank"),
        (["--no-textured", "--textures-dir", "."], "--textures-dir needs the textured scene"),
        (["--gradient-steps", "0"], "--gradient-steps must be >= 1"),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_clip_spec, tmp_path, monkeypatch, args, message):
    assert message in exit_message(SCRIPT, ["--clip-model", tiny_clip_spec, *args], tmp_path, monkeypatch)


def test_defaults_are_the_papers_setup():
    """Appendix C of arXiv 2310.12921 (and tests/test_sac_clip_mountaincar.py for MountainCar)."""
    from sac_clip_humanoid import Args

    args = Args()
    paper = dict(total_timesteps=10_000_000, episode_length=100, num_envs=32, learning_starts=50_000, train_frequency=100,
                 gradient_steps=100, policy_lr=6e-4, q_lr=6e-4, gamma=0.95, tau=0.005, batch_size=256, buffer_size=1_000_000,
                 autotune=True, hidden_sizes=(256, 256), alpha=0.0, clip_model="ViT-bigG-14/laion2b_s39b_b160k", task=None,
                 baseline_prompt=("a humanoid robot",), camera=(3.5, -10.0, 180.0, 1.0), render_size=480, textured=True,
                 render_quality=None)  # None: MuJoCo's own shadow map and multisampling, as the authors' scene keeps them
    assert {name: getattr(args, name) for name in paper} == paper  # task None: kneeling unless a --prompt is given


HANDSTAND = "a humanoid robot doing a handstand"
NO_SUCCESS_RUN = ["--total-timesteps", 120, "--num-envs", 2, "--episode-length", 30, "--render-size", 48,
                  "--learning-starts", 60, "--batch-size", 16, "--buffer-size", 1000, "--checkpoint-frequency", 60,
                  "--image-frequency", 1000]  # fmt: skip


@pytest.mark.parametrize("task", [None, "kneeling"])
def test_a_new_prompt_has_no_automatic_success_unless_a_task_judges_it(task, tiny_clip_spec, tmp_path, monkeypatch):
    """--prompt alone: the start line says there is no automatic success, nothing logs one (no charts/success, no
    task label on the frames CLIP paid for), and evaluate.py writes returns and videos without a success rate.
    --task kneeling with the same prompt: kneeling's predicate judges it."""
    import csv
    import runpy
    import subprocess
    import sys

    from conftest import REPO_ROOT

    args = ["--clip-model", tiny_clip_spec, "--prompt", HANDSTAND, *NO_SUCCESS_RUN, *(["--task", task] if task else [])]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--no-cuda", "--no-async-envs", *map(str, args)])
    script_globals = runpy.run_path(os.path.join(REPO_ROOT, SCRIPT), run_name="__main__")
    window_labels = {entry[3] for entry in script_globals["reward_window"].highest + script_globals["reward_window"].lowest}
    scalars, _, run_dir = read_scalars(tmp_path)
    assert len(scalars["charts/episodic_clip_return"]) == 2 and len(scalars["pose/kneeling"]) == 2
    if task is not None:  # kneeling's predicate judges the reworded prompt (evaluate.py's success: tests/test_evaluate.py)
        assert scalars["charts/task_fraction"] == scalars["pose/kneeling"]
        assert window_labels <= {True, False} and None not in window_labels
        return
    evaluation = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "evaluate.py"), run_dir, "--episodes", "2",
                                 "--video-episodes", "2", "--no-cuda"], capture_output=True, text=True, cwd=tmp_path,
                                timeout=300)  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr
    (folder,) = glob.glob(f"{run_dir}/eval_step_*")
    with open(os.path.join(folder, "evaluation.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(glob.glob(f"{folder}/*.mp4")) == 2 and len(rows) == 2 and all(row["clip_return"] for row in rows)
    assert script_globals["args"].task is None and script_globals["args"].prompt == (HANDSTAND,)
    assert not {"charts/success", "charts/task_fraction"} & set(scalars)
    assert window_labels == {None}  # the grids' frames carry their reward alone
    assert "no automatic success" in evaluation.stdout and "success rate" not in evaluation.stdout
    assert all(row["success"] == "" for row in rows)


def test_the_start_line_says_how_a_run_is_judged(tiny_clip_spec, tmp_path, monkeypatch):
    for args, expected in (([], "success: the kneeling predicate holds on half an episode or more"), (["--prompt", HANDSTAND], "success: none")):
        (tmp_path / str(len(args))).mkdir()
        result = run_script(SCRIPT, ["--clip-model", tiny_clip_spec, *args, "--total-timesteps", 2, "--num-envs", 2,
                                     "--learning-starts", 2, "--render-size", 32], tmp_path / str(len(args)))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout.splitlines()[0], result.stdout
    message = exit_message(SCRIPT, ["--prompt", HANDSTAND, "--reward", "ground-truth"], tmp_path, monkeypatch)
    assert "--reward must be clip for a --prompt alone" in message


def test_center_rewards_subtracts_the_batchs_mean_reward_in_the_critics_target(tmp_path, monkeypatch):
    """--center-rewards: with the same seed, networks and first batch, the first critic target of a centred run is the
    plain run's minus that batch's mean reward, for every transition (not each transition's own reward, not nothing).
    The task's ground-truth score is the reward: no render, no CLIP."""
    import runpy
    import sys

    import torch.nn.functional as F

    import run_utils
    from conftest import REPO_ROOT

    seen = {}
    real_mse_loss, real_sample = F.mse_loss, run_utils.ReplayBuffer.sample

    def mse_loss(values, target, *args, **kwargs):
        seen.setdefault("target", target.detach().clone())
        return real_mse_loss(values, target, *args, **kwargs)

    def sample(self, batch_size):
        data = real_sample(self, batch_size)
        seen.setdefault("rewards", data.rewards.flatten().clone())
        return data

    targets = {}
    for flags in ([], ["--center-rewards"]):
        seen.clear()
        (tmp_path / str(len(flags))).mkdir()
        monkeypatch.chdir(tmp_path / str(len(flags)))
        monkeypatch.setattr(F, "mse_loss", mse_loss)
        monkeypatch.setattr(run_utils.ReplayBuffer, "sample", sample)
        args = ["--reward", "ground-truth", "--task", "kneeling", "--total-timesteps", 24, "--num-envs", 2,
                "--episode-length", 10, "--learning-starts", 20, "--train-frequency", 1, "--gradient-steps", 1, "--batch-size", 16,
                "--no-async-envs", "--no-cuda", *flags]  # fmt: skip
        monkeypatch.setattr(sys, "argv", [SCRIPT, *map(str, args)])
        runpy.run_path(os.path.join(REPO_ROOT, SCRIPT), run_name="__main__")
        targets[bool(flags)] = seen["target"], seen["rewards"]
    (plain, rewards), (centred, same_rewards) = targets[False], targets[True]
    torch.testing.assert_close(rewards, same_rewards, rtol=0, atol=0)  # the same first batch
    assert rewards.std() > 0  # rewards that differ, so that each transition's own reward would show
    torch.testing.assert_close(plain - centred, torch.full_like(plain, rewards.mean().item()), rtol=0, atol=2e-5)
