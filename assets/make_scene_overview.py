"""Draw docs/images/scenes.png: the three default scenes as CLIP sees them, goal and non-goal side by side.

Each panel is the training script's frame after the reward model's own resize to 224x224
(ViT-B-32 to ViT-bigG-14 all take 224 px): the humanoid standing and kneeling, the car in the
valley and at the flag, the pole upright and fallen.

    python assets/make_scene_overview.py        # a few seconds; rewrites docs/images/scenes.png
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clip_envs  # noqa: E402
import clip_reward  # noqa: E402
from assets import humanoid_poses  # noqa: E402

CLIP_SIZE = 224


def humanoid_frames():
    env = clip_envs.make_humanoid("Humanoid-v5", 100, clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES))
    env.reset(seed=0)
    frames = []
    for qpos in humanoid_poses.standing_and_kneeling_qpos(env):
        env.unwrapped.set_state(qpos, np.zeros(env.unwrapped.model.nv))
        frames.append(env.render())
    env.close()
    return frames


def mountaincar_frames():
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 200, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    env.reset(seed=0)
    frames = []
    for position in (-0.52, clip_envs.GOAL_POSITION):
        env.unwrapped.state = np.array([position, 0.0])
        frames.append(env.render())
    env.close()
    return frames


def cartpole_frames():
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    env.reset(seed=0)
    frames = []
    for angle in (0.0, np.radians(100)):
        env.unwrapped.state = np.array([0.0, 0.0, angle, 0.0])
        frames.append(env.render())
    env.close()
    return frames


if __name__ == "__main__":
    panels = [
        ("humanoid: standing", "kneeling (goal)", humanoid_frames()),
        ("mountaincar: valley", "at the flag (goal)", mountaincar_frames()),
        ("cartpole: upright (goal)", "fallen", cartpole_frames()),
    ]
    label_height, gap = 18, 6
    sheet = Image.new("RGB", (2 * CLIP_SIZE + gap, 3 * (CLIP_SIZE + label_height) + 2 * gap), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (left_label, right_label, frames) in enumerate(panels):
        pictures = clip_reward.resize_frames(np.stack(frames), (CLIP_SIZE, CLIP_SIZE))
        top = row * (CLIP_SIZE + label_height + gap)
        for col, (label, picture) in enumerate(zip((left_label, right_label), pictures)):
            left = col * (CLIP_SIZE + gap)
            draw.text((left + 4, top + 3), label, fill="black")
            pixels = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(pixels), (left, top + label_height))
    path = os.path.join(ROOT, "docs", "images", "scenes.png")
    sheet.save(path, optimize=True)
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
