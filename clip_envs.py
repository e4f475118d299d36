"""The environments as CLIP sees them: fixed-length episodes, the paper's scenes and cameras, pose indicators.

What CLIP sees is the method's main lever (the paper's kneeling ablation: stock look 36% success,
textures 91%, textures and camera 100%), so the defaults here are the authors' scenes
(github.com/AlignmentResearch/vlmrm, paper Appendix C), drawn with the project's own textures
(`assets/make_textures.py`); `textures_dir` swaps in any of the authors' files by name.

| env         | episode                                    | what is rendered                                        |
| CartPole    | 200 steps, never ends early; the cart      | gymnasium's 600x400 drawing                             |
|             | stops at the track's ends; angle wrapped   |                                                         |
| MountainCar | 200 steps; the flag (x >= 0.45) parks the  | 600x400: a landscape photo whose mountain edge is       |
|             | car there                                  | gymnasium's track, a car sprite rotated to the slope    |
| Humanoid    | 100 steps, never ends early                | 480x480: metallic robot, cloudy sky, slate floor,       |
|             |                                            | directional light with shadows, a fixed frontal camera  |

Frames are handed to CLIP at this size; `clip_reward.FramePreprocessor` resizes them whole
to the model's input, as the authors did.
"""

import atexit
import glob
import hashlib
import multiprocessing
import multiprocessing.util
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import warnings
import zlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable

# pygame draws CartPole and MountainCar off screen: no window or sound device (and no "XDG_RUNTIME_DIR" complaint),
# and SDL must leave SIGTERM/SIGINT to the training scripts, which checkpoint on them (SDL would swallow SIGTERM).
for _name, _value in (("SDL_VIDEODRIVER", "dummy"), ("SDL_AUDIODRIVER", "dummy"), ("SDL_NO_SIGNAL_HANDLERS", "1")):
    os.environ.setdefault(_name, _value)

import gymnasium as gym  # noqa: E402 (after the SDL settings, which pygame reads when it starts)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

TEXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "textures")
HUMANOID_TEXTURES = ("sky.png", "tiles.png", "robot.png")
MOUNTAINCAR_TEXTURES = ("mountain_car_background.png", "mountain_car.png")
# The smallest image (width, height) that still draws its part of the scene for CLIP: a 1x1 sprite is an invisible car.
MIN_TEXTURE_SIZE = {"mountain_car_background.png": (60, 40), "mountain_car.png": (16, 8), "sky.png": (16, 16),
                    "tiles.png": (8, 8), "robot.png": (8, 8)}  # fmt: skip
CUBE_TEXTURES = ("sky.png", "robot.png")  # MuJoCo maps one file on a cube's faces: square, or six squares stacked


# The paper's eight humanoid tasks and their goal prompts (Table 3, verbatim); the baseline is "a humanoid robot" for all.
HUMANOID_TASKS = {
    "kneeling": "a humanoid robot kneeling",
    "lotus": "a humanoid robot seated down, meditating in the lotus position",
    "standing": "a humanoid robot standing up",
    "arms-raised": "a humanoid robot standing up, with both arms raised",
    "splits": "a humanoid robot practicing gymnastics, doing the side splits",
    "hands-on-hips": "a humanoid robot standing up with hands on hips",
    "arms-crossed": "a humanoid robot standing up, with its arms crossed",
    "one-leg": "a humanoid robot standing up on one leg",
}

# The paper's prompts (Table 3) for each environment: (goal, baseline).
PROMPTS = {
    "cartpole": ("pole vertically upright on top of the cart", "pole and cart"),
    "mountaincar": ("a car at the peak of the mountain, next to the yellow flag", "a car in the mountain"),
    "humanoid": (HUMANOID_TASKS["kneeling"], "a humanoid robot"),
}


class SceneError(ValueError):
    """A scene cannot be built as asked (missing or unreadable textures, bad camera); one line, says what to fix."""


# --------------------------------------------------------------------------------------
# Any gymnasium env: its own episodes and frames, and goals that can be checked on its observation
# --------------------------------------------------------------------------------------

PENDULUM_UPRIGHT = 0.3  # rad: "pointing straight up" within this angle (Pendulum-v1's observation is cos, sin, velocity)


@dataclass(frozen=True)
class EnvTask:
    """A goal for an env of gymnasium's registry whose success can be read off each observation, so a run learning it
    reports success as the paper defined it (the goal holds on at least half of the episode's steps)."""

    env_id: str
    prompt: str
    baseline_prompt: str
    goal: str  # the rule `holds` checks, in words
    holds: Callable[[np.ndarray], np.ndarray]  # observations (N, ...) -> (N,) bool


ENV_TASKS = {
    "pendulum-upright": EnvTask("Pendulum-v1", "a pendulum pointing straight up", "a pendulum",
                                f"within {PENDULUM_UPRIGHT} rad of upright",
                                lambda obs: obs[..., 0] >= np.cos(PENDULUM_UPRIGHT)),
    "pendulum-down": EnvTask("Pendulum-v1", "a pendulum hanging straight down", "a pendulum",
                             f"within {PENDULUM_UPRIGHT} rad of straight down",
                             lambda obs: obs[..., 0] <= -np.cos(PENDULUM_UPRIGHT)),
}  # fmt: skip


def check_env_id(env_id):
    """Raise SceneError unless gymnasium's registry knows env_id (after importing the module of a "module:Env-v0" id);
    the error names the closest registered ids."""
    import difflib
    import importlib

    try:
        module, _, name = env_id.rpartition(":")
        if module:  # as gym.make does: the module registers its envs when imported
            importlib.import_module(module)
        gym.spec(name)
    except (gym.error.Error, ImportError) as error:
        name = env_id.split(":")[-1]
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f" ({str(error).splitlines()[0]})"
        raise SceneError(f"--env-id {env_id} is not a registered gymnasium env{hint}") from None


def _describe_env(env_id, render_size):
    """In a process of its own (check_env): the env's action space and first frame, or what is wrong with them."""
    env = gym.make(env_id, render_mode="rgb_array")
    if isinstance(env.action_space, gym.spaces.Discrete):
        return (f"{env_id} has a discrete action space ({env.action_space}): SAC needs a continuous one "
                "(discrete actions: the DQN of dqn_clip_cartpole.py)")
    if not isinstance(env.action_space, gym.spaces.Box):
        return f"{env_id} has the action space {env.action_space}: SAC needs a continuous one (gymnasium.spaces.Box)"
    if "rgb_array" not in env.metadata.get("render_modes", []):
        modes = env.metadata.get("render_modes", [])
        return f"{env_id} cannot render rgb_array frames (its render modes: {modes}), which CLIP needs"
    env.reset(seed=0)
    frame = env.render()
    env.close()
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
        what = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        return f"{env_id} renders {what} frames; CLIP needs uint8 RGB frames (height, width, 3)"
    if render_size is not None and render_size > min(frame.shape[:2]):
        height, width = frame.shape[:2]
        return f"--render-size {render_size} is larger than {env_id}'s {height}x{width} frames: at most {min(height, width)}"
    return list(frame.shape)


def check_env(env_id, render_size=None):
    """The (height, width, 3) of env_id's rgb_array frames, or SceneError saying in one line why SAC and CLIP cannot
    use it: an unknown id, a discrete action space, no rgb_array render, frames that are not uint8 RGB, a --render-size
    beyond its frames. The env is made and rendered in a process of its own: a GL context made in this process would hang
    a vector env's forked workers."""
    import json

    use_headless_mujoco_gl()
    check_env_id(env_id)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import clip_envs; "
            "print(json.dumps(clip_envs._describe_env(sys.argv[2], json.loads(sys.argv[3]))))")  # fmt: skip
    folder = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, "-c", code, folder, env_id, json.dumps(render_size)]
    path = os.pathsep.join(filter(None, (folder, os.environ.get("PYTHONPATH"))))  # this project, and the user's modules
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=path))
    if result.returncode != 0:
        cause = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SceneError(f"--env-id {env_id} cannot be made and rendered ({cause})")
    described = json.loads(result.stdout.strip().splitlines()[-1])
    if isinstance(described, str):
        raise SceneError(described)
    return tuple(described)


def scene_textures(names, textures_dir=None, textured=True):
    """{file name: absolute path} of the textures to draw with: the project's own, or those of `names` found in
    textures_dir; None for the untextured scene (`textured` False, where a textures_dir is an error).

    Every image is opened here, so a bad file is a one-line SceneError before any work starts.
    """
    if not textured:
        if textures_dir is not None:
            raise SceneError("--textures-dir needs the textured scene: drop --no-textured")
        return None
    paths = {name: os.path.join(TEXTURES_DIR, name) for name in names}
    if textures_dir is not None:
        if not os.path.isdir(textures_dir):
            raise SceneError(f"--textures-dir {textures_dir} is not a folder")
        # absolute: env workers may run in another folder, and MuJoCo reads the files itself
        found = {name: os.path.abspath(os.path.join(textures_dir, name)) for name in names}
        found = {name: path for name, path in found.items() if os.path.isfile(path)}
        if not found:
            raise SceneError(f"--textures-dir {textures_dir} holds none of {', '.join(names)} (the authors' file names)")
        paths.update(found)
    for path in paths.values():
        try:
            with Image.open(path) as image:
                image.load()
                image_format, (width, height) = image.format, image.size
        except Exception as error:  # PIL raises many types for a broken file; all mean the same here
            raise SceneError(
                f"cannot read texture {path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            )
        if image_format != "PNG":  # MuJoCo decodes texture files itself and reads PNG only
            raise SceneError(f"texture {path} is a {image_format} image; save it as PNG")
        name = os.path.basename(path)
        low_width, low_height = MIN_TEXTURE_SIZE.get(name, (1, 1))
        if width < low_width or height < low_height:
            raise SceneError(f"texture {path} is {width}x{height} px; {name} needs at least {low_width}x{low_height}")
        if name in CUBE_TEXTURES and height not in (width, 6 * width):
            raise SceneError(f"texture {path} is {width}x{height} px; {name} must be square (or six squares stacked)")
    return paths


# --------------------------------------------------------------------------------------
# CartPole
# --------------------------------------------------------------------------------------


class CartPoleOnTrack(gym.Wrapper):
    """CartPole as the authors ran it: every episode runs to its time limit, the pole may fall,
    the cart stops at the ends of the track (so it never leaves the frame) and the angle is
    wrapped to [-pi, pi]. The reward becomes the ground truth for logging: 1 while the pole is
    within CartPole's usual +-12 degrees, else 0."""

    def __init__(self, env):
        super().__init__(env)
        cartpole = env.unwrapped
        high = np.array([cartpole.x_threshold, np.finfo(np.float32).max, np.pi, np.finfo(np.float32).max], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def step(self, action):
        _, _, _, truncated, info = self.env.step(action)
        cartpole = self.env.unwrapped
        cartpole.steps_beyond_terminated = None  # keep stepping without CartPole's "already terminated" warning
        x, x_dot, theta, theta_dot = cartpole.state
        if abs(x) > cartpole.x_threshold:  # the cart hits the end of its track and stops
            x, x_dot = np.clip(x, -cartpole.x_threshold, cartpole.x_threshold), 0.0
        theta = (theta + np.pi) % (2 * np.pi) - np.pi
        cartpole.state = np.array([x, x_dot, theta, theta_dot], dtype=np.float64)
        upright = abs(theta) <= cartpole.theta_threshold_radians
        return np.array(cartpole.state, dtype=np.float32), float(upright), False, truncated, info


def make_cartpole(env_id, episode_length, render):
    """CartPole for CLIP: 600x400 rgb_array frames when `render`, fixed-length episodes."""
    env = gym.make(env_id, render_mode="rgb_array" if render else None, max_episode_steps=episode_length)
    return CartPoleOnTrack(env)


# --------------------------------------------------------------------------------------
# MountainCar
# --------------------------------------------------------------------------------------

GOAL_POSITION = 0.45  # MountainCarContinuous's flag


class FixedLengthMountainCar(gym.Wrapper):
    """Runs every episode to its time limit. Reaching the flag parks the car there (velocity 0)
    for the rest of the episode: the paper's absorbing goal, a state CLIP can see. The env's own
    reward (+100 at the flag, minus the action cost) stays as the ground truth; parked steps earn 0."""

    def reset(self, **kwargs):
        self.parked_state = None
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        car = self.env.unwrapped
        if self.parked_state is not None:
            reward = 0.0
        elif terminated:
            self.parked_state = np.array([obs[0], 0.0], dtype=np.float32)
        if self.parked_state is not None:
            car.state = self.parked_state.copy()
            obs = self.parked_state.copy()
        return obs, reward, False, truncated, info


def mountain_height(x):
    """gymnasium's track: height of the mountain at position x (world units)."""
    return np.sin(3 * x) * 0.45 + 0.55


class MountainCarScene:
    """gymnasium's 600x400 MountainCar frame drawn the authors' way: a background picture whose
    mountain edge is the track, and a car sprite rotated to the slope with its wheels on the track."""

    MIN_POSITION, MAX_POSITION = -1.2, 0.6
    WIDTH, HEIGHT = 600, 400
    SCALE = WIDTH / (MAX_POSITION - MIN_POSITION)  # pixels per world unit, as in gymnasium

    def __init__(self, background_path, car_path):
        background = Image.open(background_path).convert("RGB")
        if background.size != (self.WIDTH, self.HEIGHT):  # the track only lines up with a 600x400 picture
            background = background.resize((self.WIDTH, self.HEIGHT), Image.BICUBIC)
        self.background = background
        # Rotating in premultiplied alpha keeps the transparent pixels' colour out of the car's edges.
        self.car = Image.open(car_path).convert("RGBA").convert("RGBa")

    def pixel_of(self, x, height):
        """(row, column) in the frame of the world point (x, height)."""
        return self.HEIGHT - height * self.SCALE, (x - self.MIN_POSITION) * self.SCALE

    def render(self, position):
        """uint8 (400, 600, 3) frame with the car at track position x."""
        angle = np.arctan(np.cos(3 * position) * 0.45 * 3)  # the track's slope (authors' formula)
        car = self.car.rotate(np.degrees(angle), resample=Image.BICUBIC, expand=True).convert("RGBA")
        # The car's centre sits half its height above the track, along the slope's normal.
        row, col = self.pixel_of(position, mountain_height(position))
        lift = self.car.height / 2
        centre_row, centre_col = row - lift * np.cos(angle), col - lift * np.sin(angle)
        frame = self.background.copy()
        frame.paste(car, (int(round(centre_col - car.width / 2)), int(round(centre_row - car.height / 2))), car)
        return np.array(frame)  # a writable copy, like gymnasium's renderers return


class MountainCarRender(gym.Wrapper):
    """Replaces the env's render() with the textured scene (what CLIP and the videos see)."""

    def __init__(self, env, textures):
        super().__init__(env)
        self.scene = MountainCarScene(textures["mountain_car_background.png"], textures["mountain_car.png"])

    def render(self):
        return self.scene.render(float(self.env.unwrapped.state[0]))


def make_mountaincar(env_id, episode_length, textures):
    """MountainCarContinuous for CLIP; textures from `scene_textures(MOUNTAINCAR_TEXTURES)`, None for gymnasium's drawing."""
    env = gym.make(env_id, render_mode="rgb_array", max_episode_steps=episode_length)
    env = FixedLengthMountainCar(env)
    if textures is not None:
        env = MountainCarRender(env, textures)
    return env


# --------------------------------------------------------------------------------------
# Humanoid
# --------------------------------------------------------------------------------------

# The paper's camera: a fixed free camera in front of the humanoid, slightly above it.
PAPER_CAMERA = (3.5, -10.0, 180.0, 1.0)  # distance (m), elevation, azimuth (degrees), look-at height (m)
RENDER_SIZE = 480  # the paper's render; CLIP's preprocessing resizes it


def use_headless_mujoco_gl():
    """Render offscreen through EGL on a Linux machine without a display, unless MUJOCO_GL is set.
    MuJoCo reads MUJOCO_GL when it is first imported, so call this before anything imports it."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")


def check_mujoco_gl():
    """Raise SceneError unless MuJoCo can render a frame with MUJOCO_GL (set to egl on a headless Linux if unset).
    The test frame is drawn in a process of its own: a GL context made here would hang a vector env's forked workers."""
    use_headless_mujoco_gl()
    backend = os.environ.get("MUJOCO_GL", "").lower().strip()
    if backend not in ("", "egl", "osmesa", "glfw", "glx", "wgl", "cgl"):
        raise SceneError(f"MUJOCO_GL={backend} cannot render the frames CLIP needs: use egl (GPU or Mesa), osmesa or glfw")
    probe = "import mujoco; mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8).render()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        cause = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SceneError(
            f"MuJoCo cannot render with MUJOCO_GL={backend or 'its default'} ({cause}); "
            "use MUJOCO_GL=egl (GPU or Mesa) or osmesa, with its library installed"
        )


def check_camera(camera):
    """Raise SceneError unless camera = (distance > 0, elevation, azimuth, look-at height), all finite."""
    if len(camera) != 4 or not np.all(np.isfinite(camera)) or camera[0] <= 0:
        raise SceneError(f"--camera takes DISTANCE ELEVATION AZIMUTH LOOKAT_HEIGHT, finite, distance > 0; got {tuple(camera)}")


def humanoid_xml(textures, render_size, quality=None):
    """Path to gymnasium's humanoid.xml with the paper's scene (textures from `scene_textures`;
    None keeps gymnasium's look). The physics is untouched; only assets, light and the offscreen size change.
    quality = (shadow map size, multisamples) replaces MuJoCo's defaults (4096, 4), which the paper's scene keeps:
    a cheaper render for benchmarks (bench/sps.py --humanoid-render)."""
    import gymnasium.envs.mujoco

    stock = os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "humanoid.xml")
    root = ET.parse(stock).getroot()
    if textures is not None:
        asset = root.find("asset")
        for child in list(asset):
            asset.remove(child)
        for element in [
            f'<texture type="skybox" file="{textures["sky.png"]}"/>',
            f'<texture name="texplane" type="2d" file="{textures["tiles.png"]}"/>',
            '<material name="MatPlane" texture="texplane" texrepeat="60 60" reflectance="0" shininess="0" specular="0"/>',
            f'<texture name="texgeom" type="cube" file="{textures["robot.png"]}"/>',
            '<material name="geom" texture="texgeom" texuniform="true" specular="1" shininess="1"/>',
        ]:
            asset.append(ET.fromstring(element))
        root.find("default/geom").set("rgba", "1 1 1 1")  # let the metal texture show
        root.find("worldbody/geom[@name='floor']").set("rgba", "1 1 1 1")
        light = root.find("worldbody/light")
        light.attrib.update(
            {"diffuse": "1 1 1", "specular": ".5 .5 .5", "dir": "0 0 -1.5", "pos": "0 0 1", "directional": "true"}
        )
    visual = root.find("visual")
    visual.append(ET.fromstring(f'<global offwidth="{max(render_size, 640)}" offheight="{max(render_size, 480)}"/>'))
    if quality is not None:
        visual.append(ET.fromstring(f'<quality shadowsize="{quality[0]}" offsamples="{quality[1]}"/>'))
    text = ET.tostring(root, encoding="unicode")
    # Named by content and written atomically: parallel env workers may build the same file at once.
    path = os.path.join(tempfile.gettempdir(), f"vlmrm_humanoid_{hashlib.sha1(text.encode()).hexdigest()[:16]}.xml")
    if not os.path.exists(path):
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".xml")
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    return path


class HumanoidCamera(gym.Wrapper):
    """Renders with MuJoCo's own Renderer from a free camera: fixed where the paper put it, or
    following the torso across the floor (`follow`) at a fixed look-at height."""

    render_mode = "rgb_array"  # what render() returns; RecordVideo checks it

    def __init__(self, env, render_size, camera=PAPER_CAMERA, follow=False):
        super().__init__(env)
        import mujoco  # imported here, after use_headless_mujoco_gl() had its chance

        check_camera(camera)
        distance, elevation, azimuth, self.lookat_height = camera
        self.follow, self.render_size, self.renderer = follow, render_size, None
        self.camera = mujoco.MjvCamera()  # a free camera
        self.camera.distance, self.camera.elevation, self.camera.azimuth = distance, elevation, azimuth
        self.camera.lookat[:] = (0.0, 0.0, self.lookat_height)

    def render(self):
        # The GL context is made on the first frame, in the process that renders: a vector env's main process only
        # builds a dummy env, and an EGL context made before its workers fork would hang them.
        if self.renderer is None:
            self.renderer = make_renderer(self.env.unwrapped.model, self.render_size)
        data = self.env.unwrapped.data
        if self.follow:
            self.camera.lookat[:] = (data.qpos[0], data.qpos[1], self.lookat_height)
        self.renderer.update_scene(data, camera=self.camera)
        return self.renderer.render()

    def render_settings(self):
        """(frame size, shadow map size, multisamples) this env renders with: what a benchmark asked for must show here."""
        quality = self.env.unwrapped.model.vis.quality
        return self.render_size, int(quality.shadowsize), int(quality.offsamples)

    def close(self):
        if self.renderer is not None:
            self.renderer.close()
        super().close()


def make_renderer(model, render_size):
    """MuJoCo's offscreen Renderer, or SceneError saying how to fix MUJOCO_GL."""
    import mujoco

    try:
        return mujoco.Renderer(model, height=render_size, width=render_size)
    except mujoco.FatalError as error:
        gl = os.environ.get("MUJOCO_GL", "default")
        raise SceneError(
            f"MuJoCo cannot render with MUJOCO_GL={gl} ({str(error).split(',')[0]}); set MUJOCO_GL=egl or osmesa "
            "in the shell (MuJoCo reads it when first imported)"
        )


# Task predicates: the paper's Table 2 criteria as checks on the MuJoCo state, so success needs no human rater.
# Positions are read in the torso's frame where the body's own left/right/front matter (x forward, y left).
KNEE_ON_FLOOR = 0.12  # m: a knee (the shin's origin, under a 5-6 cm capsule) this low rests on the floor
FOOT_ON_FLOOR = 0.125  # m: the foot sphere's centre (radius 7.5 cm) this low touches the floor
UPRIGHT = 0.8  # the torso's up axis at least this close to vertical (cos 37 degrees)


def _in_torso_frame(data, point):
    torso = data.body("torso")
    return torso.xmat.reshape(3, 3).T @ (np.asarray(point) - torso.xpos)


def pose_measures(data):
    """The quantities the task predicates read, in metres (heights above the floor, offsets in the torso's frame)."""
    torso = data.body("torso")
    knees = [data.body(f"{side}_shin").xpos for side in ("left", "right")]
    feet = [data.geom(f"{side}_foot").xpos for side in ("left", "right")]
    hands = [data.geom(f"{side}_hand").xpos for side in ("left", "right")]
    return {
        "torso_height": float(torso.xpos[2]),
        "head_height": float(data.geom("head").xpos[2]),
        "butt_height": float(data.geom("butt").xpos[2]),
        "upright": float(torso.xmat[8]),  # z of the torso's up axis
        "knee_heights": [float(k[2]) for k in knees],
        "foot_heights": [float(f[2]) for f in feet],
        "hand_heights": [float(h[2]) for h in hands],
        "knees_local": [_in_torso_frame(data, k) for k in knees],
        "feet_local": [_in_torso_frame(data, f) for f in feet],
        "hands_local": [_in_torso_frame(data, h) for h in hands],
        "hips_local": [_in_torso_frame(data, data.body(f"{side}_thigh").xpos) for side in ("left", "right")],
    }


# Each task is a list of margins, one per condition of its Table 2 criterion: positive when the condition holds, and
# otherwise minus how far it is from holding (metres, or cosines for the torso's tilt). The task holds when every margin
# is positive; its dense score (a ground-truth reward) falls off with the summed shortfall, and is 1 when it holds.
SCORE_SCALE = 0.25  # a summed shortfall this large scores exp(-1)


def _standing(m):
    """Upright with the torso high, at least one foot on the floor and no knee down: not falling."""
    return [
        m["upright"] - UPRIGHT,
        m["torso_height"] - 1.05,
        FOOT_ON_FLOOR - min(m["foot_heights"]),
        min(m["knee_heights"]) - (KNEE_ON_FLOOR + 0.15),
    ]


def _kneeling(m):
    """Both knees on the floor (not in the air), torso upright and raised above them (not sitting or lying)."""
    return [KNEE_ON_FLOOR - max(m["knee_heights"]), m["upright"] - UPRIGHT, m["torso_height"] - 0.7]


def _lotus(m):
    """Seated upright, both knees on the floor and out to the sides, each foot tucked in nearer the middle than its knee."""
    (left_knee, right_knee), (left_foot, right_foot) = m["knees_local"], m["feet_local"]
    return [
        0.25 - m["butt_height"],  # on the floor or on the heels: the body's hip limits allow no deeper lotus
        m["upright"] - UPRIGHT,
        KNEE_ON_FLOOR - max(m["knee_heights"]),
        left_knee[1] - right_knee[1] - 0.45,
        left_knee[1] - 0.1 - abs(left_foot[1]),
        -right_knee[1] - 0.1 - abs(right_foot[1]),
    ]


def _arms_raised(m):
    """Standing with both hands above the head."""
    return _standing(m) + [min(m["hand_heights"]) - (m["head_height"] + 0.05)]


def _splits(m):
    """On the floor (hips low), both feet on the floor far out to the sides, legs stretched."""
    (left_foot, right_foot), (left_hip, right_hip) = m["feet_local"], m["hips_local"]
    leg_lengths = [np.linalg.norm(foot - hip) for foot, hip in ((left_foot, left_hip), (right_foot, right_hip))]
    return [
        0.35 - m["butt_height"],
        FOOT_ON_FLOOR - max(m["foot_heights"]),
        left_foot[1] - right_foot[1] - 1.0,
        min(leg_lengths) - 0.7,  # hip to foot is ~0.85 m with a straight knee
    ]


def _hands_on_hips(m):
    """Standing, each hand at its own side of the waist, at hip height (below the chest)."""
    margins = _standing(m)
    for hand, hip in zip(m["hands_local"], m["hips_local"]):
        margins += [0.2 - np.linalg.norm(hand[[0, 1]] - hip[[0, 1]]), hand[2] - (hip[2] - 0.1), hip[2] + 0.3 - hand[2]]
    return margins


def _arms_crossed(m):
    """Standing, forearms crossed in front of the chest: each hand well past the body's midline on the other side."""
    left_hand, right_hand = m["hands_local"]
    margins = _standing(m) + [-0.08 - left_hand[1], right_hand[1] - 0.08, min(left_hand[0], right_hand[0]) - 0.05]
    return margins + [bound for hand in (left_hand, right_hand) for bound in (hand[2] + 0.45, 0.15 - hand[2])]


def _one_leg(m):
    """Standing with exactly one foot on the floor, the other clearly lifted."""
    low, high = sorted(m["foot_heights"])
    return _standing(m) + [FOOT_ON_FLOOR - low, high - (FOOT_ON_FLOOR + 0.1)]


TASK_MARGINS = {
    "kneeling": _kneeling,
    "lotus": _lotus,
    "standing": _standing,
    "arms-raised": _arms_raised,
    "splits": _splits,
    "hands-on-hips": _hands_on_hips,
    "arms-crossed": _arms_crossed,
    "one-leg": _one_leg,
}
# The task predicates: every margin positive.
TASK_PREDICATES = {task: (lambda m, margins=margins: all(x > 0 for x in margins(m))) for task, margins in TASK_MARGINS.items()}


def task_scores(data):
    """{task: dense ground-truth score in (0, 1]} for all eight tasks: 1 when the task holds in the humanoid's current
    state, exp(-summed shortfall / SCORE_SCALE) when it does not, so a body nearer the pose scores higher."""
    measures = pose_measures(data)
    scores = {}
    for task, margins in TASK_MARGINS.items():
        values = margins(measures)
        shortfall = sum(max(0.0, -float(x)) for x in values)
        scores[task] = 1.0 if all(x > 0 for x in values) else float(np.exp(-shortfall / SCORE_SCALE))
    return scores


def task_success(data):
    """{task: 1.0 if the humanoid's current state meets the paper's criterion for it, else 0.0} for all eight tasks."""
    measures = pose_measures(data)
    return {task: float(bool(holds(measures))) for task, holds in TASK_PREDICATES.items()}


POSE_INDICATORS = ("torso_height", "head_height", *HUMANOID_TASKS)  # the keys of `pose_indicators`


def pose_indicators(data):
    """Per-step pose information for logging: torso and head height and, for every task, whether it holds now."""
    torso_height, head_height = data.body("torso").xpos[2], data.geom("head").xpos[2]
    return {"torso_height": torso_height, "head_height": head_height, **task_success(data)}


class PoseIndicators(gym.Wrapper):
    """Puts `pose_indicators` of the current state into every info dict; with a `task`, the env's reward is that task's
    ground-truth score of the state after the step (`task_scores`) instead of Humanoid-v5's reward for running."""

    def __init__(self, env, task=None):
        super().__init__(env)
        self.task = task

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, **pose_indicators(self.env.unwrapped.data)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.task is not None:
            reward = task_scores(self.env.unwrapped.data)[self.task]
        return obs, reward, terminated, truncated, {**info, **pose_indicators(self.env.unwrapped.data)}


def make_humanoid(
    env_id, episode_length, textures, render_size=RENDER_SIZE, camera=PAPER_CAMERA, follow=False, quality=None, task=None
):
    """Humanoid for CLIP: no termination when it falls, the paper's scene (textures from
    `scene_textures(HUMANOID_TEXTURES)`, None for gymnasium's look), rendered at render_size
    (quality: see `humanoid_xml`); with a `task`, its reward is the task's ground-truth score (`PoseIndicators`)."""
    use_headless_mujoco_gl()
    xml_file = humanoid_xml(textures, render_size, quality)
    env = gym.make(env_id, max_episode_steps=episode_length, terminate_when_unhealthy=False, xml_file=xml_file)
    env = PoseIndicators(env, task)
    return HumanoidCamera(env, render_size, camera, follow)


# --------------------------------------------------------------------------------------
# Env state for checkpoints
# --------------------------------------------------------------------------------------

_PLAIN = (type(None), bool, int, float, str, np.number, np.ndarray)


def _end_env_workers():
    """Kill the vector env workers still alive when the training process exits: they ignore SIGTERM (FrameInInfo),
    which is all multiprocessing's own exit handler sends them, so a run that failed would wait for them forever."""
    for process in multiprocessing.active_children():
        if process.name.startswith("Worker<AsyncVectorEnv>"):
            process.kill()


# Registered after multiprocessing's exit handler (imported above), so it runs before it.
atexit.register(_end_env_workers)


class RecordVideo(gym.wrappers.RecordVideo):
    """gymnasium's RecordVideo, without its "Overwriting existing videos" warning for a folder that holds no video:
    an AsyncVectorEnv builds env 0 once in the training process to read its spaces, and that copy makes the folder
    before the worker's env 0 starts recording into it."""

    def __init__(self, env, video_folder, **kwargs):
        with warnings.catch_warnings():
            if not glob.glob(os.path.join(glob.escape(video_folder), "*.mp4")):  # nothing there to overwrite
                warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            super().__init__(env, video_folder, **kwargs)


class FrameInInfo(gym.Wrapper):
    """The outermost wrapper of a training env. With `render`, it renders once after every reset and step and hands the
    frame out with the step as info["frame"] (with a `size`, resized whole to size x size where the env runs): a vector
    env's workers render in parallel and the frames come back with
    the step, stacked (num_envs, H, W, 3), with no second round trip; render() returns that same frame (for videos).
    Its `checkpoint_state` and `load_checkpoint_state` reach every env of a vector env through `call`, worker or not."""

    def __init__(self, env, render=True, size=None):
        super().__init__(env)
        self.rendering, self.size, self.frame, self.state_to_load = render, size, None, None
        if multiprocessing.parent_process() is not None:
            # In a vector env's worker: Ctrl-C and a scheduler's SIGTERM reach the whole process group, but only the
            # training process may act on them (it checkpoints and closes the workers).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._with_frame(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_frame(info)

    def _with_frame(self, info):
        if not self.rendering:
            return info
        self.frame = self.env.render()
        if self.size is not None:  # fewer bytes cross to the trainer
            self.frame = square_frame(self.frame, self.size)
        return {**info, "frame": self.frame}

    def render(self):
        return self.frame if self.rendering else self.env.render()

    def checkpoint_state(self):
        return env_state(self)

    def load_checkpoint_state(self):
        """Load the state put in `state_to_load` (vector envs: `set_attr("state_to_load", states)`, then `call`)."""
        state, self.state_to_load = self.state_to_load, None
        load_env_state(self, state)


def square_frame(frame, size):
    """The whole frame (H, W, 3) uint8 resized (bicubic) to size x size, as CLIP's preprocessing resizes it."""
    if frame.shape[:2] == (size, size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))


def env_state(env):
    """Everything that decides an env's future, for a checkpoint: each layer's (wrappers', then the base env's)
    plain attributes (step counters, CartPole's state, episode statistics, the name of the video being recorded), the
    frames of that video so far, its random generators (the env's and its action space's), and MuJoCo's data.
    Renderers and pygame surfaces are rebuilt, not saved."""
    import copy

    layers = []
    while True:
        state = {}
        for name, value in vars(env).items():
            if name in ("frame", "state_to_load"):  # FrameInInfo's hand-over, not the env's state
                continue
            if isinstance(value, np.random.Generator):
                state[name] = ("generator", copy.deepcopy(value.bit_generator.state))
            elif isinstance(value, gym.spaces.Space) and value._np_random is not None:
                state[name] = ("space", copy.deepcopy(value.np_random.bit_generator.state))
            elif type(value).__name__ == "MjData":  # all of it: the env's reward also reads derived quantities
                state[name] = ("mujoco", zlib.compress(pickle.dumps(value), 1))  # ~50 kB for the humanoid
            elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):  # RecordVideo's frames
                state[name] = ("frames", zlib.compress(pickle.dumps(value), 1))
            elif isinstance(value, _PLAIN):
                state[name] = ("value", copy.deepcopy(value))
        layers.append(state)
        if not isinstance(env, gym.Wrapper):
            return layers
        env = env.env


def load_env_state(env, layers):
    """Put a state from `env_state` back into an env built the same way (and reset once)."""
    for state in layers:
        for name, (kind, value) in state.items():
            if kind == "generator":
                getattr(env, name).bit_generator.state = value
            elif kind == "space":
                getattr(env, name).np_random.bit_generator.state = value
            elif kind in ("mujoco", "frames"):
                setattr(env, name, pickle.loads(zlib.decompress(value)))
            else:
                setattr(env, name, value)
        env = getattr(env, "env", None)
