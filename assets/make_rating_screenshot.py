"""Screenshot of rate.py's rating page for docs/judging_a_new_prompt.md, taken in headless Chromium as a person sees it.

Renders a few of the labelled humanoid states (assets/humanoid-states.npz) in the paper's scene at 256 px into a
temporary folder, starts `rate.py serve` on it for "a humanoid robot kneeling", answers two frames by key, and saves
the page. Needs Debian's chromium and chromium-driver and `pip install selenium`.

    MUJOCO_GL=egl python assets/make_rating_screenshot.py
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import clip_envs  # noqa: E402

OUTPUT = os.path.join(REPO_ROOT, "docs", "images", "rating_page.png")


def render_states(folder, count=12, size=256):
    saved = np.load(os.path.join(REPO_ROOT, "assets", "humanoid-states.npz"))
    env = clip_envs.make_humanoid("Humanoid-v5", 100, clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES), size)
    env.reset(seed=0)
    for i, state in enumerate(np.random.default_rng(3).choice(len(saved["qpos"]), count, replace=False)):
        env.unwrapped.set_state(saved["qpos"][state], saved["qvel"][state])
        Image.fromarray(env.render()).save(os.path.join(folder, f"state-{i:03d}.png"))
    env.close()


if __name__ == "__main__":
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    clip_envs.use_headless_mujoco_gl()
    with tempfile.TemporaryDirectory() as folder:
        render_states(folder)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "rate.py"), "serve", folder, "--prompt",
                                   clip_envs.HUMANOID_TASKS["kneeling"], "--port", str(port)], stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        server.stdout.readline()
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=900,720"):  # fmt: skip
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/?rater=ann")
            time.sleep(1)
            for key in "ny":
                driver.find_element(By.TAG_NAME, "body").send_keys(key)
                time.sleep(0.5)
            driver.save_screenshot(OUTPUT)
        finally:
            driver.quit()
            server.terminate()
    print(f"wrote {OUTPUT}")
