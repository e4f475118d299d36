"""Registered gymnasium envs that the generic script must refuse in one line (`--env-id custom_envs:NAME`)."""

import gymnasium as gym
import numpy as np


class TinyContinuousEnv(gym.Env):
    """A point on a line pushed by a continuous action; draws itself as `frame_kind` says."""

    metadata = {"render_modes": ["rgb_array"]}
    frame_kind = "rgb"

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.position = 0.0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0.0
        return np.array([self.position], np.float32), {}

    def step(self, action):
        self.position = float(np.clip(self.position + 0.1 * float(action[0]), -1, 1))
        return np.array([self.position], np.float32), -abs(self.position), False, False, {}

    def render(self):
        frame = np.zeros((40, 40, 3), np.uint8)
        frame[:, int((self.position + 1) * 19.5)] = 255
        if self.frame_kind == "float":
            return frame.astype(np.float32) / 255
        if self.frame_kind == "gray":
            return frame[:, :, 0]
        return frame


class NoRenderEnv(TinyContinuousEnv):
    metadata = {"render_modes": []}


class FloatFrameEnv(TinyContinuousEnv):
    frame_kind = "float"


class GrayFrameEnv(TinyContinuousEnv):
    frame_kind = "gray"


for _env in (TinyContinuousEnv, NoRenderEnv, FloatFrameEnv, GrayFrameEnv):
    gym.register(f"{_env.__name__}-v0", entry_point=f"{__name__}:{_env.__name__}", max_episode_steps=20)
