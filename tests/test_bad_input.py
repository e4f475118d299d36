"""Bad input never gives a traceback or a silent wrong result: each case below ends with one line naming the cause,
before any work. (The scripts run in this process up to their checks; tests/test_*_clip_*.py run a few as subprocesses.)"""

import json
import os
import sys

import open_clip
import pytest
import torch

import clip_reward
from conftest import REPO_ROOT, save_tiny_clip
from helpers import assert_one_line_error, exit_message, run_script

DQN, MOUNTAINCAR, HUMANOID = "dqn_clip_cartpole.py", "sac_clip_mountaincar.py", "sac_clip_humanoid.py"
TINY_CARTPOLE_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests"

CASES = [
    (DQN, ["--gamma", "nan"], "--gamma must be in [0, 1], got nan"),
    (DQN, ["--learning-rate", "inf"], "--learning-rate must be > 0 and finite, got inf"),
    (DQN, ["--learning-rate", "0"], "--learning-rate must be > 0"),
    (DQN, ["--tau", "0"], "--tau must be in (0, 1]"),
    (DQN, ["--start-e", "1.5"], "--start-e must be in [0, 1]"),
    (DQN, ["--exploration-fraction", "0"], "--exploration-fraction must be in (0, 1]"),
    (DQN, ["--total-timesteps", "100", "--learning-starts", "1000"], "--total-timesteps must be >= --num-envs and --learning-starts"),
    (DQN, ["--total-timesteps", "3", "--num-envs", "4", "--learning-starts", "0"], "--total-timesteps must be >= --num-envs"),
    (DQN, ["--learning-starts", "-1"], "--learning-starts must be >= 0"),
    (DQN, ["--env-id", "MountainCar-v0"], "--env-id must be CartPole-v1 or CartPole-v0"),
    (DQN, ["--checkpoint-frequency", "-5"], "--checkpoint-frequency must be >= 0"),
    (DQN, ["--exp-name", "../elsewhere"], "--exp-name must be a folder name"),
    (DQN, ["--alpha", "nan"], "alpha must be in [0, 1]"),
    (MOUNTAINCAR, ["--ent-coef", "nan"], "--ent-coef must be >= 0 and finite, got nan"),
    (MOUNTAINCAR, ["--q-lr", "-1"], "--q-lr must be > 0"),
    (MOUNTAINCAR, ["--gamma", "1.5"], "--gamma must be in [0, 1]"),
    (MOUNTAINCAR, ["--env-id", "Pendulum-v1"], "--env-id must be MountainCarContinuous-v0"),
    (HUMANOID, ["--policy-lr", "inf"], "--policy-lr must be > 0 and finite"),
    (HUMANOID, ["--render-size", "100000"], "--render-size must be in [32, 4096]"),
    (HUMANOID, ["--render-size", "1"], "--render-size must be in [32, 4096], got 1"),
    (DQN, ["--buffer-size", "100000000000"], "--buffer-size must be >= 1 and fit in this machine's"),
    (HUMANOID, ["--buffer-size", "0"], "--buffer-size must be >= 1"),
    (HUMANOID, ["--render-quality", "512", "-1"],
     "--render-quality must be SHADOW_SIZE in [0, 16384] and MULTISAMPLES in [0, 16], got (512, -1)"),
    (HUMANOID, ["--render-quality", "100000", "4"], "--render-quality must be SHADOW_SIZE in [0, 16384]"),  # no GL draws it
    (HUMANOID, ["--batch-size", "100000000"], "--batch-size must be >= 1 and <= --buffer-size, got 100000000"),
    (DQN, ["--prompt", ""], "--prompt must be one or more sentences, none of them blank, got ('',)"),
    (MOUNTAINCAR, ["--baseline-prompt", "a car", "  "], "--baseline-prompt must be one or more sentences"),
    (HUMANOID, ["--prompt"], "--prompt must be one or more sentences, none of them blank, got ()"),  # not the task's prompt
    (DQN, ["--num-envs", "1000"], "--num-envs 1000 starts 1000 env worker processes (at most 256)"),
    (HUMANOID, ["--env-id", "Humanoid-v4"], "--env-id must be Humanoid-v5"),
    (HUMANOID, ["--camera", "3", "nan", "0", "1"], "--camera takes DISTANCE ELEVATION AZIMUTH LOOKAT_HEIGHT, finite"),
    (HUMANOID, ["--camera", "inf", "-10", "180", "1"], "--camera takes"),
    (HUMANOID, ["--tau", "-0.1"], "--tau must be in (0, 1]"),
]


@pytest.mark.parametrize("script, args, message", CASES, ids=[f"{s[:-3]}{' '.join(a)}" for s, a, _ in CASES])
def test_bad_arguments_stop_with_one_line(script, args, message, tmp_path, monkeypatch):
    assert message in exit_message(script, ["--clip-model", TINY_CARTPOLE_CLIP, *args], tmp_path, monkeypatch)


@pytest.mark.parametrize("script", [DQN, MOUNTAINCAR, HUMANOID])
def test_a_bad_argument_ends_the_process_with_one_line(script, tmp_path):
    """The same checks in a real process: exit status 1, one line on stderr, no traceback, no runs/ folder."""
    result = run_script(script, ["--clip-model", TINY_CARTPOLE_CLIP, "--gamma", "nan"], tmp_path)
    assert_one_line_error(result, "error:", "--gamma must be in [0, 1], got nan")
    assert result.returncode == 1 and not os.path.exists(tmp_path / "runs")


def test_an_invalid_mujoco_gl_is_refused_before_anything_renders(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "disable")
    assert "MUJOCO_GL=disable cannot render" in exit_message(HUMANOID, ["--clip-model", TINY_CARTPOLE_CLIP], tmp_path, monkeypatch)


def test_a_mujoco_gl_that_cannot_render_here_is_named_before_any_work(tmp_path, monkeypatch):
    """glfw needs a display: on this headless machine MuJoCo cannot make its context, which a test frame drawn in a
    process of its own finds out before the run starts (in an env worker it would end in a worker's traceback)."""
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    message = exit_message(HUMANOID, ["--clip-model", TINY_CARTPOLE_CLIP], tmp_path, monkeypatch)
    assert "MuJoCo cannot render with MUJOCO_GL=glfw" in message


def test_a_prompt_longer_than_the_text_context_names_its_token_count(tmp_path, monkeypatch):
    prompt = "a humanoid robot " * 10  # the tiny CLIP's text context is 16 tokens
    count = int((open_clip.tokenize([prompt], context_length=200) != 0).sum())  # start and end tokens included
    assert count > 30
    message = exit_message(HUMANOID, ["--clip-model", TINY_CARTPOLE_CLIP, "--prompt", prompt], tmp_path, monkeypatch)
    assert f"is {count} tokens, more than this CLIP's text context of 16" in message
    message = exit_message(DQN, ["--clip-model", TINY_CARTPOLE_CLIP, "--baseline-prompt", prompt], tmp_path, monkeypatch)
    assert "baseline prompt" in message and f"{count} tokens" in message
    fits = "a b c d e f g h i j k l m n"  # 14 words + start and end: exactly the context, accepted
    assert clip_reward.load_reward_model(TINY_CARTPOLE_CLIP, [fits], ["a"], alpha=0.0, device="cpu") is not None


def test_a_local_dir_without_weights_is_an_error_not_a_random_clip(tmp_path, monkeypatch):
    folder = tmp_path / "config-only"
    save_tiny_clip(str(folder))
    os.remove(folder / "open_clip_pytorch_model.bin")
    message = exit_message(DQN, ["--clip-model", f"local-dir:{folder}"], tmp_path, monkeypatch)
    assert "no weights file" in message


def test_load_failures_name_the_real_cause(tmp_path):
    save_tiny_clip(str(tmp_path / "tiny"))
    wide = tmp_path / "wide"
    save_tiny_clip(str(wide))
    config = json.loads((wide / "open_clip_config.json").read_text())
    config["model_cfg"]["embed_dim"] = 48  # another architecture than the weights beside it
    (wide / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(clip_reward.CLIPRewardError, match="do not fit this architecture"):
        clip_reward.load_clip(f"local-dir:{wide}")
    broken = tmp_path / "broken"
    save_tiny_clip(str(broken))
    (broken / "open_clip_config.json").write_text("{not json")
    with pytest.raises(clip_reward.CLIPRewardError, match="broken open_clip_config.json"):
        clip_reward.load_clip(f"local-dir:{broken}")
    truncated = tmp_path / "truncated"
    save_tiny_clip(str(truncated))
    weights = truncated / "open_clip_pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(clip_reward.CLIPRewardError, match="truncated or not a weights file"):
        clip_reward.load_clip(f"local-dir:{truncated}")


def test_an_unreachable_hub_fails_at_once_and_says_how_to_go_on(tmp_path, monkeypatch):
    """No network and nothing cached: the error comes before any retry, and names the ways forward."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(clip_reward.CLIPRewardError) as error:
        clip_reward.load_clip("ViT-B-32/laion2b_s34b_b79k", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "hub.invalid is unreachable" in message and str(tmp_path) in message
    assert "--clip-checkpoint" in message and "HF_HUB_OFFLINE=1" in message and "tiny-CLIP demo" in message
    assert constants.HF_HUB_OFFLINE is False  # the offline switch was only for that attempt


@pytest.mark.parametrize("call, message", [
    (lambda m: m.rewards_from_embeddings(torch.zeros(1, 32), alpha="0.5"), "alpha must be in"),
    (lambda m: clip_reward.CLIPReward(m.model, m.tokenizer, ["a"], ["b"], alpha=True), "alpha must be in"),
    (lambda m: clip_reward.CLIPReward(m.model, m.tokenizer, ["a"], ["b"], alpha=0.5, batch_size=2.5), "batch size must be"),
    (lambda m: m.embed_prompts([3]), "non-empty list of non-empty strings"),
    (lambda m: m.rewards_from_embeddings(torch.zeros(2, 7)), r"image embeddings must be a tensor \(N, 32\) of this CLIP's, got \(2, 7\)"),
    (lambda m: m.rewards_from_embeddings(torch.zeros(32)), r"got \(32,\)"),
    (lambda m: m(None), "numpy array or torch tensor"),
])
def test_the_python_api_raises_clip_reward_errors_for_bad_types(call, message, tiny_clip_spec):
    model = clip_reward.load_reward_model(tiny_clip_spec, ["a cart"], ["a pole"], alpha=0.0, device="cpu")
    with pytest.raises(clip_reward.CLIPRewardError, match=message):
        call(model)


@pytest.mark.parametrize("device, message", [("gpu0", "bad device 'gpu0'"), ("cuda:7", "device cuda:7")])
def test_a_bad_device_is_named(device, message, tiny_clip_spec):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(clip_reward.CLIPRewardError, match=message):
        clip_reward.load_reward_model(tiny_clip_spec, ["a cart"], ["a pole"], alpha=0.0, device=device)


@pytest.mark.parametrize("script", [DQN, MOUNTAINCAR, HUMANOID])
def test_a_negative_seed_is_refused(script, tmp_path, monkeypatch):
    assert "--seed must be in [0, " in exit_message(script, ["--clip-model", TINY_CARTPOLE_CLIP, "--seed", "-1"], tmp_path, monkeypatch)


def test_a_damaged_checkpoint_is_named(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "CartPole-v1__dqn_clip_cartpole__1__1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_000000100.pt").write_bytes(b"not a checkpoint")
    message = exit_message(DQN, ["--resume", "runs/CartPole-v1__dqn_clip_cartpole__1__1"], tmp_path, monkeypatch, new_run=False)
    assert "cannot read runs/CartPole-v1__dqn_clip_cartpole__1__1/checkpoints/step_000000100.pt" in message
    with pytest.raises(SystemExit) as exit_info:
        monkeypatch.setattr("sys.argv", ["evaluate.py", str(run_dir)])
        import runpy

        runpy.run_path(os.path.join(REPO_ROOT, "evaluate.py"), run_name="__main__")
    assert "cannot read" in exit_info.value.code and "step_000000100.pt as a checkpoint" in exit_info.value.code


@pytest.mark.parametrize("call, message", [
    (lambda: clip_reward.load_reward_model(123, ["a"], ["b"], 0.0, device="cpu"), "model_spec must be a name such as"),
    (lambda: clip_reward.load_reward_model(None, ["a"], ["b"], 0.0, device="cpu"), "got None"),
    (lambda: clip_reward.load_reward_model(TINY_CARTPOLE_CLIP, None, ["b"], 0.0, device="cpu"), "target_prompts must be a string"),
    (lambda: clip_reward.load_reward_model(TINY_CARTPOLE_CLIP, ["a"], [3], 0.0, device="cpu"), "baseline_prompts must be a string"),
    (lambda: clip_reward.load_reward_model(TINY_CARTPOLE_CLIP, ["a"], ["b"], "0.5", device="cpu"), r"got '0.5' \(a str\)"),
    # checked before the weights are loaded (here a download that would fail): the prompt is named, not the hub
    (lambda: clip_reward.load_reward_model(clip_reward.DEFAULT_MODEL, [" "], ["b"], 0.0, device="cpu"), "target_prompts must be a string or a non-empty list"),
    (lambda: clip_reward.load_reward_model(clip_reward.DEFAULT_MODEL, ["a"], [], 0.0, device="cpu"), "baseline_prompts must be a string or a non-empty list"),
])
def test_the_python_api_names_the_argument_of_the_wrong_type(call, message):
    with pytest.raises(clip_reward.CLIPRewardError, match=message):
        call()


def test_weights_files_that_cannot_be_loaded_say_why(tmp_path):
    text = tmp_path / "notes.bin"
    text.write_text("hello, not weights")
    with pytest.raises(clip_reward.CLIPRewardError, match="could not load .*notes.bin as ViT-B-32 weights: not a weights file"):
        clip_reward.load_clip("ViT-B-32", checkpoint=str(text))
    tiny_weights = f"{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests/open_clip_model.safetensors"
    with pytest.raises(clip_reward.CLIPRewardError, match="do not fit this architecture"):  # another model's weights
        clip_reward.load_clip("ViT-B-32", checkpoint=tiny_weights)
    empty = tmp_path / "empty-config"
    save_tiny_clip(str(empty))
    (empty / "open_clip_config.json").write_text("{}")
    with pytest.raises(clip_reward.CLIPRewardError, match=r'open_clip_config.json has no "model_cfg": open_clip\'s format is'):
        clip_reward.load_clip(f"local-dir:{empty}")


def test_textures_are_checked_for_what_the_scene_can_draw(tmp_path, monkeypatch):
    import clip_envs
    from PIL import Image

    monkeypatch.chdir(REPO_ROOT)
    paths = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, "assets/textures")  # relative, as a user types it
    assert all(os.path.isabs(path) and os.path.isfile(path) for path in paths.values())  # env workers may run elsewhere
    Image.new("RGB", (100, 60)).save(tmp_path / "sky.png")
    with pytest.raises(clip_envs.SceneError, match=r"sky.png is 100x60 px; sky.png must be square"):
        clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, str(tmp_path))
    os.remove(tmp_path / "sky.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "mountain_car.png")
    with pytest.raises(clip_envs.SceneError, match=r"mountain_car.png is 1x1 px; mountain_car.png needs at least 16x8"):
        clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES, str(tmp_path))


def test_resuming_a_missing_folder_or_another_scripts_run_is_named(tmp_path, monkeypatch):
    message = exit_message(DQN, ["--resume", "runs/nope"], tmp_path, monkeypatch, new_run=False)
    assert "--resume runs/nope: no such folder" in message
    from sac_clip_mountaincar import Args

    run = tmp_path / "runs" / "MountainCarContinuous-v0__sac_clip_mountaincar__1__1"
    (run / "checkpoints").mkdir(parents=True)
    # a checkpoint that does not say its script: its arguments tell
    torch.save({"args": vars(Args()), "global_step": 100, "ranks": [{}]}, run / "checkpoints" / "step_000000100.pt")
    message = exit_message(DQN, ["--resume", f"runs/{run.name}"], tmp_path, monkeypatch, new_run=False)
    assert "that run (MountainCarContinuous-v0) was not written by dqn_clip_cartpole.py" in message


def test_a_videos_file_where_the_videos_go_is_refused_before_the_run(tmp_path, monkeypatch):
    (tmp_path / "videos").write_text("a file where the videos/ folder should be")
    message = exit_message(DQN, ["--clip-model", TINY_CARTPOLE_CLIP, "--capture-video"], tmp_path, monkeypatch)
    assert f"the run writes into videos/ here, and {tmp_path / 'videos'} is a file" in message


def run_tool(tool, args, cwd, monkeypatch):
    """Run a tool in this process up to its checks; any scoring (a reward model loaded) fails the test. Returns the
    one-line error it exits with."""
    import runpy

    def work_started(*args, **kwargs):
        raise AssertionError("the tool started its work before refusing its input")

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [tool, "--no-cuda", *map(str, args)])
    monkeypatch.setattr(clip_reward, "load_reward_model", work_started)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO_ROOT, tool), run_name="__main__")
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("tool, args, message", [
    ("clip_reward_landscape.py", ["--prompt"], "--prompt was given no values"),
    ("clip_reward_landscape.py", ["--alphas"], "--alphas was given no values"),
    ("clip_reward_landscape.py", ["--output-dir", "a-file"], "--output-dir a-file: cannot write there"),
    ("clip_reward_landscape.py", ["--save-frames", "a-file/frames"], "--save-frames a-file/frames: cannot write there"),
    ("clip_reward_landscape.py", ["--env", "humanoid", "--no-textured", "--textures-dir", "."], "needs the textured scene"),
    ("clip_reward_epic.py", ["--clip-model"], "--clip-model was given no values"),
    ("clip_reward_epic.py", ["--alphas"], "--alphas was given no values"),
    ("clip_reward_epic.py", ["--render-size", "0"], "--render-size must be in [32, 4096] (as in sac_clip_humanoid.py), got 0"),
    ("clip_reward_epic.py", ["--env", "cartpole", "--output-dir", "a-file"], "--output-dir a-file: cannot write there"),
    ("clip_reward_epic.py", ["--clip-model", TINY_CARTPOLE_CLIP, "ViT-B-32", "--clip-checkpoint", "-", "/nonexistent"],
     "CLIP checkpoint file not found: /nonexistent"),  # the second model, found before the first is scored
    ("clip_reward_landscape.py", ["--prompt", " "], "--prompt must be one or more sentences, none of them blank, got (' ',)"),
])  # fmt: skip
def test_the_tools_refuse_bad_input_before_their_work(tool, args, message, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("a file where a folder should be")
    assert message in run_tool(tool, args, tmp_path, monkeypatch)


@pytest.mark.parametrize("args, message", [
    (["--ent-coef", "0"], "--ent-coef must be > 0, got 0.0"),
    (["--ent-coef", "nan"], "--ent-coef must be > 0, got nan"),
    (["--checkpoint-frequency", "-1"], "--checkpoint-frequency must be >= 0, got -1"),
    (["--validation-episodes", "0"], "--validation-episodes must be >= 1, got 0"),
    (["--seeds", "1", "2", "1"], "--seeds must be distinct, got 1 2 1"),
    (["--parallel", "0"], "--parallel must be >= 1, got 0"),
    (["--run-dir", "run", "--seeds", "1", "2"], "--run-dir is one run: give its seed alone, e.g. --seeds 1 (got --seeds 1 2)"),
])  # fmt: skip
def test_the_kneeling_bench_refuses_bad_input_before_it_trains(args, message, tmp_path, monkeypatch):
    import runpy
    import subprocess

    def work_started(*args, **kwargs):
        raise AssertionError("the bench started its work before refusing its input")

    bench = os.path.join(REPO_ROOT, "bench", "sac_tiny_clip_kneeling.py")
    monkeypatch.setattr(sys, "argv", [bench, "--output-dir", str(tmp_path), *args])
    monkeypatch.setattr(subprocess, "run", work_started)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(bench, run_name="__main__")
    assert exit_info.value.code == f"error: {message}"
