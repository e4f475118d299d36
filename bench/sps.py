"""Benchmark: end-to-end env steps/s of each training script, the time per stage, and its efficiency against CLIP.

Each script runs in this process (runpy) as a user would run it, with a random-weight CLIP (nothing downloaded) and
`--num-envs` envs (stepped and rendered in worker processes), its settings given as its own flags (the humanoid's
`--render-size` and `--render-quality`, checked against what the env workers report they render), and spies that only
read clocks: on the vector env's
step (env step + render, in the workers), on the reward model (resize, encode, project) and on the loop. After
`--warmup` vector steps, `--steps` more are timed. Updates keep each script's update ratio (gradient steps per vector
step) but run every 10 vector steps, so that a short measurement holds several training phases.

efficiency = end-to-end env steps/s / bare CLIP frames/s, where bare CLIP is `encode_image` on preprocessed tensors,
same model, device, precision, threads and batch (--num-envs frames): 1.0 means the run goes as fast as CLIP alone.

    python bench/sps.py                              # ViT-B-32 on a CPU, --num-envs 8
    python bench/sps.py --clip-model ViT-bigG-14     # on a GPU: also frames/s and memory
    python bench/sps.py --scripts sac_clip_humanoid.py --humanoid-render 224 512 0   # what a cheaper render would buy
    python bench/sps.py --image-cost                 # also the share of a run the TensorBoard frame grids take
"""

import dataclasses
import json
import os
import runpy
import sys
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training scripts set it, before torch loads

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402
import run_utils  # noqa: E402

# Each script's update ratio (gradient steps per vector step), kept while training every 10 vector steps.
SCRIPTS = {
    "dqn_clip_cartpole.py": ["--train-frequency", "10", "--gradient-steps", "5"],  # defaults: 1 every 2
    "sac_clip_mountaincar.py": ["--train-frequency", "10", "--gradient-steps", "20"],  # 400 every 200
    "sac_clip_humanoid.py": ["--train-frequency", "10", "--gradient-steps", "10"],  # 100 every 100
}


@dataclass
class Args:
    clip_model: str = "ViT-B-32"
    """open_clip architecture, with random weights"""
    num_envs: int = 8
    """envs per vector step: CLIP's batch"""
    warmup: int = 5
    """vector steps before the clock starts (worker start, first renders, first updates)"""
    steps: int = 20
    """timed vector steps"""
    scripts: tuple[str, ...] = tuple(SCRIPTS)
    """the training scripts to measure"""
    cuda: bool = True
    """run CLIP (and the learner) on the GPU if there is one"""
    humanoid_render: tuple[int, int, int] = (clip_envs.RENDER_SIZE, 4096, 4)
    """the humanoid's render: size (px), shadow map size, multisamples; the paper's by default (MuJoCo's 4096 and 4)"""
    image_cost: bool = False
    """also time the TensorBoard reward window (keeping the best and worst frames each step, writing its grids) and
    give its share of a run at the script's default --image-frequency"""


def humanoid_quality(humanoid_render):
    """clip_envs.make_humanoid's quality for --humanoid-render: None (the paper's scene, untouched) for MuJoCo's defaults."""
    return None if tuple(humanoid_render[1:]) == (4096, 4) else tuple(humanoid_render[1:])


def random_clip_folder(architecture):
    """A local-dir: folder with random weights of `architecture` (written once into the temp folder)."""
    folder = os.path.join(tempfile.gettempdir(), f"vlmrm-bench-{architecture}-random")
    if not os.path.exists(os.path.join(folder, "open_clip_pytorch_model.bin")):
        os.makedirs(folder, exist_ok=True)
        model = open_clip.create_model(architecture)
        with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
            json.dump({"model_cfg": open_clip.get_model_config(architecture), "preprocess_cfg": {}}, f)
        torch.save(model.state_dict(), os.path.join(folder, "open_clip_pytorch_model.bin"))
    return folder


def measure(script, args, clip_folder):
    """Run one script with clock-reading spies; returns its timings and globals."""
    clock = {"env": [], "clip": [], "steps": [], "window_add": [], "window_write": []}
    real_steps = {kind: kind.step for kind in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)}
    real_score = clip_reward.CLIPReward.score
    real_window = {name: getattr(run_utils.RewardWindow, name) for name in ("add", "write_if_due")}

    def timed_step(kind):
        def step(self, actions):
            if not clock["steps"] and "humanoid" in script:  # before the clock starts: what the env workers render with
                clock["worker_render"] = list(self.call("render_settings"))
            start = time.perf_counter()
            result = real_steps[kind](self, actions)
            clock["env"].append(time.perf_counter() - start)
            clock["steps"].append(time.perf_counter())
            return result

        return step

    def score(self, frames):
        start = time.perf_counter()
        rewards, along, off = real_score(self, frames)
        if rewards.is_cuda:
            torch.cuda.synchronize()
        clock["clip"].append(time.perf_counter() - start)
        return rewards, along, off

    def timed_window(name):
        def method(self, *arguments, **keywords):
            writes = name == "write_if_due" and bool(self.rewards)
            start = time.perf_counter()
            real_window[name](self, *arguments, **keywords)
            if name == "add" or (writes and not self.rewards):  # a write starts a new, empty window
                clock[f"window_{'add' if name == 'add' else 'write'}"].append(time.perf_counter() - start)

        return method

    total = (args.warmup + args.steps + 1) * args.num_envs
    argv = [
        script,
        "--clip-model",
        f"local-dir:{clip_folder}",
        "--num-envs",
        str(args.num_envs),
        "--total-timesteps",
        str(total),
        "--learning-starts",
        str(args.num_envs),
        "--checkpoint-frequency",
        "0",
        "--exp-name",
        "sps-bench",
        *SCRIPTS[script],
    ]
    if not args.cuda:
        argv.append("--no-cuda")
    if args.image_cost:  # two writes inside the timed steps, so that one write's time is measured
        argv += ["--image-frequency", str(args.steps * args.num_envs // 2)]
    if "humanoid" in script:  # through the script's own flags, as a user would ask for them
        argv += ["--render-size", str(args.humanoid_render[0])]
        if humanoid_quality(args.humanoid_render) is not None:
            argv += ["--render-quality", *map(str, args.humanoid_render[1:])]
    saved_argv, cwd = sys.argv, os.getcwd()
    for kind in real_steps:
        kind.step = timed_step(kind)
    clip_reward.CLIPReward.score = score
    for name in real_window:
        setattr(run_utils.RewardWindow, name, timed_window(name))
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            sys.argv = argv
            script_globals = runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    finally:
        sys.argv = saved_argv
        os.chdir(cwd)
        for kind, step in real_steps.items():
            kind.step = step
        clip_reward.CLIPReward.score = real_score
        for name, method in real_window.items():
            setattr(run_utils.RewardWindow, name, method)
    return clock, script_globals


def check_workers_render(clock, args):
    """Exit with one line unless every env worker renders with --humanoid-render and there are --num-envs of them."""
    asked = [tuple(args.humanoid_render)] * args.num_envs
    if [tuple(settings) for settings in clock["worker_render"]] != asked:
        sys.exit(f"error: asked {args.num_envs} envs rendering (size, shadow map, multisamples) {asked[0]}; the env workers "
                 f"render {clock['worker_render']}: the measurement would name another setting")  # fmt: skip


def bare_clip_fps(reward_model, batch, repeats=5):
    """frames/s of encode_image alone on preprocessed tensors: same model, device, precision and batch."""
    images = torch.rand(batch, 3, *reward_model.image_size, device=reward_model.model_device)
    times = []
    with torch.inference_mode(), reward_model.autocast():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            reward_model.model.encode_image(images)
            if images.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return batch / float(np.median(times[1:]))


def one_frame_costs(script, humanoid_render):
    """Seconds of one env step and one render in this process (for reference: workers do this in parallel)."""
    if script.startswith("dqn"):
        env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    elif "mountaincar" in script:
        env = clip_envs.make_mountaincar(
            "MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES)
        )
    else:
        textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
        env = clip_envs.make_humanoid(
            "Humanoid-v5", 100, textures, humanoid_render[0], quality=humanoid_quality(humanoid_render)
        )
    env.reset(seed=0)
    env.render()
    start = time.perf_counter()
    for _ in range(10):
        env.step(env.action_space.sample())
    stepped = time.perf_counter()
    for _ in range(10):
        env.render()
    rendered = time.perf_counter()
    env.close()
    return (stepped - start) / 10, (rendered - stepped) / 10


if __name__ == "__main__":
    args = tyro.cli(Args)
    size, shadow, multisamples = args.humanoid_render
    if size < 1 or shadow < 1 or multisamples < 0:
        sys.exit(
            f"error: --humanoid-render takes SIZE >= 1, SHADOW >= 1, MULTISAMPLES >= 0; got {size} {shadow} {multisamples}"
        )
    clip_envs.use_headless_mujoco_gl()
    clip_folder = random_clip_folder(args.clip_model)
    device = "cuda" if args.cuda and torch.cuda.is_available() else "cpu"
    print(
        f"{args.clip_model} (random weights) on {device}, torch threads {torch.get_num_threads()}, "
        f"--num-envs {args.num_envs}, humanoid render {size} px, shadow map {shadow}, multisamples {multisamples}"
    )
    efficiencies = []
    for script in args.scripts:
        clock, script_globals = measure(script, args, clip_folder)
        if "humanoid" in script:
            check_workers_render(clock, args)
        # The clock runs from the end of env step warmup-1 to the end of env step warmup+steps-1: it holds the env
        # steps warmup..warmup+steps-1 and the rewards (and updates) that follow steps warmup-1..warmup+steps-2.
        timed = slice(args.warmup, args.warmup + args.steps)
        rewards_timed = slice(args.warmup - 1, args.warmup + args.steps - 1)
        stamps = clock["steps"][args.warmup - 1 : args.warmup + args.steps]
        sps = args.steps * args.num_envs / (stamps[-1] - stamps[0])
        per_step = (stamps[-1] - stamps[0]) / args.steps
        env_time, clip_time = np.mean(clock["env"][timed]), np.mean(clock["clip"][rewards_timed])
        bare = bare_clip_fps(script_globals["reward_model"], args.num_envs)
        step_cost, render_cost = one_frame_costs(script, args.humanoid_render)
        efficiencies.append(sps / bare)
        memory = f", CLIP memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else ""
        print(
            f"{script:>24}: {sps:7.1f} env steps/s, bare CLIP {bare:7.1f} frames/s, efficiency {sps / bare:.2f} "
            f"| per vector step {per_step * 1000:6.0f} ms: envs (step + render in workers) {env_time * 1000:5.0f}, "
            f"reward {clip_time * 1000:5.0f}, update and rest {(per_step - env_time - clip_time) * 1000:5.0f} "
            f"| one env, one frame: step {step_cost * 1000:.1f} ms, render {render_cost * 1000:.1f} ms{memory}"
        )
        if "humanoid" in script:
            print(f"{'':>24}  the {args.num_envs} env workers render {size} px, shadow map {shadow}, multisamples {multisamples}")
        if args.image_cost:
            default = {field.name: field.default for field in dataclasses.fields(script_globals["Args"])}["image_frequency"]
            add_time, write_time = np.mean(clock["window_add"][timed]), np.median(clock["window_write"])
            share = (add_time + write_time * args.num_envs / default) / per_step
            print(
                f"{'':>24}  reward window: {add_time * 1000:.2f} ms per vector step, one write {write_time * 1000:.0f} ms; "
                f"at --image-frequency {default}: {share:.2%} of a vector step"
            )
    print(f"min efficiency {min(efficiencies):.2f}")
