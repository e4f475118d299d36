"""Draw the pictures of docs/tensorboard.md from one run: TensorBoard's images tab as a person sees it (headless
Chromium, Debian's `chromium` package, on a TensorBoard started here), and the run's two frame grids at one step.

    python bench/sac_tiny_clip_kneeling.py --keep-runs kept          # a run to show (~90 min on 2 cores)
    python assets/make_tensorboard_screenshot.py --logdir kept/seed-3/runs --step 50000
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    logdir: str
    """the folder of runs TensorBoard opens (one run in it)"""
    step: int = 50000
    """the step whose frame grids are saved as images"""
    output_dir: str = os.path.join(REPO_ROOT, "docs", "images")
    """where tensorboard-images-tab.png and the grids go"""
    window_size: tuple[int, int] = (1400, 1100)
    """the browser window, in pixels"""


def save_grids(run_dir, step, output_dir):
    """Each images/ tag's grid at `step`, as <tag>-step-<step>.png; returns the paths."""
    events = EventAccumulator(run_dir, size_guidance={"images": 0})
    events.Reload()
    paths = []
    for tag in ("images/highest_clip_reward", "images/lowest_clip_reward"):
        (image,) = [image for image in events.Images(tag) if image.step == step] or sys.exit(f"no {tag} at step {step}")
        paths.append(os.path.join(output_dir, f"{tag.split('/')[1].replace('_', '-')}-step-{step}.png"))
        with open(paths[-1], "wb") as file:
            file.write(image.encoded_image_string)
    return paths


def screenshot(logdir, path, window_size):
    """TensorBoard's images tab on `logdir`, as headless Chromium renders it, saved to `path`."""
    browser = shutil.which("chromium") or sys.exit("needs Chromium: apt-get install chromium")
    # started beside the folder, so that the page names it as `runs`, not by this machine's path
    logdir = os.path.abspath(logdir)
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", os.path.basename(logdir), "--host",
                               "127.0.0.1", "--port", "0"], cwd=os.path.dirname(logdir), stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = None
        while url is None:
            line = server.stderr.readline() or sys.exit("TensorBoard exited before serving")
            url = next(iter(re.findall(r"(http://127\.0\.0\.1:\d+)/", line)), None)
        while b"images/" not in urllib.request.urlopen(f"{url}/data/plugin/images/tags").read():
            time.sleep(0.5)  # the event files load a moment after the server starts listening
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={profile}", f"--window-size={window_size[0]},{window_size[1]}",
                            "--virtual-time-budget=20000", f"--screenshot={path}", f"{url}/?darkMode=false#images"],
                           check=True, capture_output=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    args = tyro.cli(Args)
    (run,) = os.listdir(args.logdir)
    os.makedirs(args.output_dir, exist_ok=True)
    for path in save_grids(os.path.join(args.logdir, run), args.step, args.output_dir):
        print(path)
    screenshot(args.logdir, os.path.join(args.output_dir, "tensorboard-images-tab.png"), args.window_size)
    print(os.path.join(args.output_dir, "tensorboard-images-tab.png"))
