"""The CLIP reward for RL code that is not this project's: wrap a vector env, and its step returns CLIP's reward of the
frame each env shows after its action, in place of the env's own, which stays in the infos as "env_reward".

Each env must hand out its frame with its step: wrap it (outermost) in `clip_envs.FrameInInfo`, which renders where the
env runs, right after the step and before any autoreset, so a terminal transition is paid for its own last frame. The
frames of all envs are scored in one CLIP call; the reward math is `clip_reward.CLIPReward`'s.

gymnasium (any `gymnasium.vector.VectorEnv`):

    envs = gym.vector.SyncVectorEnv([lambda: clip_envs.FrameInInfo(gym.make("Pendulum-v1", render_mode="rgb_array"), size=64)])
    envs = CLIPRewardVectorEnv(envs, clip_reward.load_reward_model(...))

Stable-Baselines3 (its own `VecEnv`; pip install stable-baselines3):

    venv = DummyVecEnv([lambda: clip_envs.FrameInInfo(Monitor(gym.make("Pendulum-v1", render_mode="rgb_array")), size=64)])
    model = SAC("MlpPolicy", CLIPRewardSB3VecEnv(venv, reward_model)).learn(20_000)

docs/your_own_environment.md has both examples in full.
"""

import gymnasium as gym
import numpy as np

try:
    from stable_baselines3.common.vec_env import VecEnvWrapper as _SB3VecEnvWrapper
except ImportError:  # Stable-Baselines3 is optional: only CLIPRewardSB3VecEnv needs it
    _SB3VecEnvWrapper = object


def clip_rewards(reward_model, frames):
    """CLIP's rewards (N,) float32 of the frames (N, H, W, 3) uint8 of one vector step, in one call."""
    if frames is None or any(frame is None for frame in frames):
        raise ValueError("no frame in the step's infos: wrap each env in clip_envs.FrameInInfo (outermost) to hand it out")
    return reward_model(np.stack(frames)).float().cpu().numpy()


class CLIPRewardVectorEnv(gym.vector.VectorWrapper):
    """A gymnasium vector env whose reward is CLIP's reward of each env's frame after its step; infos["env_reward"]
    holds the env's own reward. With gymnasium's next-step autoreset, the step that resets a finished env is no
    transition: its reward (the reset frame's) is for no action, as the env's own reward (0) is."""

    def __init__(self, env, reward_model):
        super().__init__(env)
        self.reward_model = reward_model

    def step(self, actions):
        observations, env_rewards, terminations, truncations, infos = self.env.step(actions)
        rewards = clip_rewards(self.reward_model, infos.get("frame"))
        return observations, rewards, terminations, truncations, {**infos, "env_reward": env_rewards}


class CLIPRewardSB3VecEnv(_SB3VecEnvWrapper):
    """A Stable-Baselines3 VecEnv whose reward is CLIP's reward of each env's frame after its step; each env's info
    holds its own reward as "env_reward". SB3 resets a finished env inside the step: the info of that step still holds
    the frame FrameInInfo rendered before the reset, so the last transition of an episode gets its own frame's reward."""

    def __init__(self, venv, reward_model):
        if _SB3VecEnvWrapper is object:
            raise ImportError("CLIPRewardSB3VecEnv needs Stable-Baselines3: pip install stable-baselines3")
        super().__init__(venv)
        self.reward_model = reward_model

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        observations, env_rewards, dones, infos = self.venv.step_wait()
        rewards = clip_rewards(self.reward_model, [info.get("frame") for info in infos])
        for info, env_reward in zip(infos, env_rewards):
            info["env_reward"] = float(env_reward)
        return observations, rewards, dones, infos
