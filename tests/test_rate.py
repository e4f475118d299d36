"""rate.py: a person's labels as the paper judged reward models. The page is driven in headless Chromium as a person uses
it (keys, reload, two tabs); the labels are checked in the SQLite file; EPIC and success rates are computed from them.
Without Chromium the browser tests skip with one line saying how to install it."""

import csv
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

import clip_envs
import clip_reward
import rate
from clip_reward_epic import epic_distance
from conftest import REPO_ROOT
from helpers import assert_one_line_error

TINY_CARTPOLE_CLIP = f"local-dir:{REPO_ROOT}/assets/tiny-cartpole-clip-for-tests"
UPRIGHT = "pole vertically upright on top of the cart"
NUM_FRAMES = 24

try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False
needs_browser = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver") and HAVE_SELENIUM),
    reason="headless Chromium missing: apt-get install chromium chromium-driver && pip install selenium",
)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cartpole_frames(tmp_path):
    """A folder of CartPole frames, half of them within 12 degrees of upright: {file name: upright}."""
    rng = np.random.default_rng(0)
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    env.reset(seed=0)
    folder, upright = tmp_path / "frames", {}
    folder.mkdir()
    for i in range(NUM_FRAMES):
        angle = rng.uniform(-0.2, 0.2) if i % 2 else rng.uniform(0.5, np.pi) * rng.choice([-1, 1])
        env.unwrapped.state = np.array([rng.uniform(-2, 2), 0.0, angle, 0.0])
        Image.fromarray(env.render()).save(folder / f"state-{i:03d}.png")
        upright[f"state-{i:03d}.png"] = abs(angle) <= env.unwrapped.theta_threshold_radians
    env.close()
    return folder, upright


class Server:
    """rate.py serve in a process of its own, as a person starts it."""

    def __init__(self, folder, *args, port=None):
        self.port = port or free_port()
        command = [sys.executable, os.path.join(REPO_ROOT, "rate.py"), "serve", str(folder), "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.line = self.process.stdout.readline()  # the start line, once it listens
        assert f"http://127.0.0.1:{self.port}/" in self.line, self.line + self.process.stderr.read()
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def state(self, rater):
        return json.loads(self.get(f"/api/state?rater={rater}")[1])

    def stop(self, kill=False):
        self.process.kill() if kill else self.process.terminate()
        self.process.wait(timeout=30)


def labels_in(folder):
    with sqlite3.connect(folder / rate.DATABASE) as connection:
        query = "SELECT items.path, rater, value FROM labels JOIN items ON items.id = item_id ORDER BY items.id, rater"
        return connection.execute(query).fetchall()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1000,760"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def shown(driver):
    """(progress text, the item's file name) once the page shows them."""
    from selenium.webdriver.common.by import By

    for _ in range(200):
        progress, name = driver.find_element(By.ID, "progress").text, driver.find_element(By.ID, "name").text
        if progress:
            return progress, name
        time.sleep(0.05)
    raise AssertionError("the page showed nothing")


def wait_for(driver, expected_progress):
    """(progress, item name) once the page shows the server's answer with this progress."""
    for _ in range(200):
        if shown(driver)[0] == expected_progress:
            return shown(driver)
        time.sleep(0.05)
    raise AssertionError(f"the page shows {shown(driver)[0]}, not {expected_progress}")


def press(driver, key, expected_progress):
    """Press a key as a person does, then wait for the page to show the server's answer."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.TAG_NAME, "body").send_keys(key)
    return wait_for(driver, expected_progress)


@needs_browser
def test_a_person_rates_frames_by_key_and_a_reload_resumes_at_the_first_unrated_one(cartpole_frames, browser, tmp_path):
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        browser.get(f"{server.url}/?rater=ann")
        assert shown(browser) == (f"0 / {NUM_FRAMES}", "state-000.png")
        assert UPRIGHT in browser.page_source and "Does this frame show the prompt?" in browser.page_source
        assert press(browser, "y", f"1 / {NUM_FRAMES}") == (f"1 / {NUM_FRAMES}", "state-001.png")
        press(browser, "n", f"2 / {NUM_FRAMES}")
        press(browser, "s", f"3 / {NUM_FRAMES}")
        assert press(browser, "u", f"2 / {NUM_FRAMES}")[1] == "state-002.png"  # undo: the skipped frame again
        press(browser, "n", f"3 / {NUM_FRAMES}")
        browser.find_element("css selector", "button.yes").click()  # a click, as a mouse user answers
        wait_for(browser, f"4 / {NUM_FRAMES}")
        browser.save_screenshot(str(tmp_path / "rating.png"))
        browser.refresh()
        assert shown(browser) == (f"4 / {NUM_FRAMES}", "state-004.png")  # the first frame ann has not rated
        assert labels_in(folder) == [("state-000.png", "ann", "yes"), ("state-001.png", "ann", "no"),
                                     ("state-002.png", "ann", "no"), ("state-003.png", "ann", "yes")]  # fmt: skip
        with Image.open(tmp_path / "rating.png") as screenshot:
            assert np.asarray(screenshot.convert("RGB")).std() > 10  # a drawn page with its frame, not a blank one
    finally:
        server.stop()


@needs_browser
def test_two_tabs_rating_at_once_lose_no_label(cartpole_frames, browser):
    """Two raters in two tabs of one browser, answering in turn: every answer of each is stored, as their own."""
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        browser.get(f"{server.url}/?rater=ann")
        first = browser.current_window_handle
        browser.switch_to.new_window("tab")
        browser.get(f"{server.url}/?rater=bob")
        second = browser.current_window_handle
        for answered in range(1, 6):
            browser.switch_to.window(first)
            press(browser, "y" if answered % 2 else "n", f"{answered} / {NUM_FRAMES}")
            browser.switch_to.window(second)
            press(browser, "n", f"{answered} / {NUM_FRAMES}")
        stored = labels_in(folder)
        assert [(path, value) for path, rater, value in stored if rater == "ann"] == [
            (f"state-{i:03d}.png", "yes" if (i + 1) % 2 else "no") for i in range(5)
        ]
        assert [(path, value) for path, rater, value in stored if rater == "bob"] == [
            (f"state-{i:03d}.png", "no") for i in range(5)
        ]
    finally:
        server.stop()


def test_concurrent_answers_are_all_stored(cartpole_frames):
    """20 answers sent at once, by threads, about 20 items: SQLite holds each, with its own value."""
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        values = {item: ("yes", "no", "skip")[item % 3] for item in range(1, 21)}
        threads = [threading.Thread(target=server.post, args=("/api/label", {"item": item, "rater": "ann", "value": value}))
                   for item, value in values.items()]  # fmt: skip
        [thread.start() for thread in threads]
        [thread.join() for thread in threads]
        assert labels_in(folder) == [(f"state-{item - 1:03d}.png", "ann", value) for item, value in values.items()]
    finally:
        server.stop()


def test_a_restart_or_a_kill_loses_nothing_and_resumes_at_the_first_unrated_item(cartpole_frames):
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    for item, value in ((1, "yes"), (2, "no"), (4, "yes")):
        assert server.post("/api/label", {"item": item, "rater": "ann", "value": value})[0] == 200
    server.stop(kill=True)  # kill -9: no chance to flush anything
    server = Server(folder)  # the label set's prompt and kind come back with it
    try:
        state = server.state("ann")
        assert (state["rated"], state["item"]["name"], state["prompt"]) == (3, "state-002.png", UPRIGHT)
        assert server.state("bob")["item"]["name"] == "state-000.png"  # each rater has their own labels
    finally:
        server.stop()


def test_only_items_of_the_label_set_are_served(cartpole_frames):
    folder, _ = cartpole_frames
    (folder.parent / "secret.txt").write_text("not for the page")
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        for path in ("/media/../secret.txt", "/media/%2e%2e%2fsecret.txt", "/media//etc/passwd", "/media/1/../../secret.txt",
                     "/../secret.txt", "/media/999", "/media/-1", "/media/1.png", f"/{folder.parent}/secret.txt"):  # fmt: skip
            status, body = server.get(path)
            assert status == 404 and b"not for the page" not in body and b"root:" not in body, path
        status, body = server.get("/media/1")
        assert status == 200 and body == (folder / "state-000.png").read_bytes()
    finally:
        server.stop()


@pytest.mark.parametrize("body, message", [
    ({"item": 999, "rater": "ann", "value": "yes"}, "no item 999"),
    ({"item": "../1", "rater": "ann", "value": "yes"}, "no item '../1'"),
    ({"item": 1, "rater": "ann", "value": "maybe"}, "a label is one of yes, no, skip"),
    ({"item": 1, "rater": "", "value": "yes"}, "a rater's name is 1 to 64 characters"),
    ({"item": 1, "rater": "x" * 65, "value": "yes"}, "a rater's name is 1 to 64 characters"),
])  # fmt: skip
def test_a_bad_label_is_refused_and_writes_nothing(body, message, cartpole_frames):
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        assert server.post("/api/label", {"item": 2, "rater": "ann", "value": "no"})[0] == 200
        status, answer = server.post("/api/label", body)
        assert status == 400 and message in answer["error"]
        assert labels_in(folder) == [("state-001.png", "ann", "no")]
        assert (
            server.post("/api/label", {**body, "item": 1, "rater": "ann", "value": "yes"})[0] == 200
        )  # the fixed one is kept
    finally:
        server.stop()


def run_rate(*args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "rate.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)  # fmt: skip


def test_bad_starts_end_in_one_line(cartpole_frames, tmp_path):
    folder, _ = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        assert_one_line_error(run_rate("serve", folder, "--port", server.port), f"cannot serve on 127.0.0.1:{server.port}")
    finally:
        server.stop()
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_rate("serve", tmp_path / "empty", "--prompt", "x"), "holds no PNG/JPG frames or videos")
    assert_one_line_error(run_rate("serve", tmp_path / "missing", "--prompt", "x"), "no such folder")
    assert_one_line_error(run_rate("serve", folder, "--prompt", "another prompt"), "was rated with --prompt")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "eval-episode-0.mp4").write_bytes(b"not a video")
    assert_one_line_error(run_rate("serve", tmp_path / "videos", "--prompt", "x", "--kind", "frames"), "cannot read the video")
    assert_one_line_error(run_rate("serve", tmp_path / "videos", "--prompt", "x"), "cannot read the video")  # episodes
    assert not (tmp_path / "videos" / rate.DATABASE).exists() and not (tmp_path / "empty" / rate.DATABASE).exists()
    (tmp_path / "corrupt").mkdir()
    shutil.copy(folder / "state-000.png", tmp_path / "corrupt")
    (tmp_path / "corrupt" / rate.DATABASE).write_bytes(b"this is not a database" * 100)
    assert_one_line_error(run_rate("serve", tmp_path / "corrupt", "--prompt", "x"), "cannot use")
    assert (tmp_path / "corrupt" / rate.DATABASE).read_bytes() == b"this is not a database" * 100  # left as it was


def test_a_locked_database_is_named_and_loses_no_label(cartpole_frames, monkeypatch):
    folder, _ = cartpole_frames
    connection, meta = rate.open_label_set(str(folder), "frames", UPRIGHT)
    rate.add_label(connection, 1, "ann", "yes")
    holder = sqlite3.connect(folder / rate.DATABASE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holding the file
    monkeypatch.setattr(rate, "LOCK_TIMEOUT_S", 0.2)
    with pytest.raises(rate.LabelError, match=r"cannot be written now \(database is locked\): not saved"):
        rate.add_label(rate.connect(str(folder / rate.DATABASE)), 2, "ann", "no")
    holder.rollback()
    holder.close()
    assert rate.read_labels(str(folder / rate.DATABASE))[2] == [(str(folder / "state-000.png"), "ann", "yes")]


def test_a_scripted_rater_gives_the_predicates_epic_and_an_inverted_one_a_worse(cartpole_frames, tmp_path):
    """Frames labelled through the page's API by the predicate (rater "script") and against it ("inverted"):
    clip_reward_epic.py --env labels gives the EPIC distance of the predicate labels, and a larger one inverted."""
    folder, upright = cartpole_frames
    server = Server(folder, "--prompt", UPRIGHT)
    try:
        for rater, invert in (("script", False), ("inverted", True)):
            while (state := server.state(rater))["item"] is not None:
                value = "yes" if upright[state["item"]["name"]] != invert else "no"
                assert server.post("/api/label", {"item": state["item"]["id"], "rater": rater, "value": value})[0] == 200
    finally:
        server.stop()
    distances = {}
    for rater in ("script", "inverted"):
        out = tmp_path / rater
        result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "clip_reward_epic.py"), "--env", "labels",
                                 "--labels", str(folder / rate.DATABASE), "--rater", rater, "--clip-model", TINY_CARTPOLE_CLIP,
                                 "--alphas", "0", "--output-dir", str(out), "--no-cuda"], capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        with open(out / "epic.csv") as f:
            (row,) = csv.DictReader(f)
        assert (row["n_goal"], row["n_other"]) == (str(NUM_FRAMES // 2), str(NUM_FRAMES // 2))  # yes and no, skips none
        distances[rater] = float(row["epic"])
    model = clip_reward.load_reward_model(TINY_CARTPOLE_CLIP, [UPRIGHT], [UPRIGHT], 0.0, device="cpu")
    names = sorted(upright)
    frames = np.stack([np.asarray(Image.open(folder / name).convert("RGB")) for name in names])
    predicate = epic_distance(model(frames).numpy(), [upright[name] for name in names])
    assert distances["script"] == pytest.approx(predicate, abs=1e-6)
    assert distances["inverted"] > distances["script"] + 0.2


def make_episode_folder(folder, automatic):
    """An evaluate.py-like folder: one short video per episode and evaluation.csv with the automatic success."""
    from gymnasium.utils.save_video import save_video

    folder.mkdir()
    for episode, success in enumerate(automatic):
        frames = [np.full((32, 32, 3), 40 * step + 60 * success, np.uint8) for step in range(4)]
        save_video(frames, str(folder), lambda _: True, fps=4, name_prefix="eval", episode_index=episode)
    with open(folder / "evaluation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["episode", "seed", "success", "task_fraction", "clip_return", "ground_truth_return"])
        writer.writerows([[episode, 10000 + episode, success, success, 1.0, 1.0] for episode, success in enumerate(automatic)])


def test_episode_ratings_give_a_success_rate_its_interval_the_agreement_and_kappa(tmp_path):
    from scipy.stats import binomtest

    folder = tmp_path / "eval_step_100"
    automatic = [1, 0, 1, 0, 1, 1, 0, 0]
    make_episode_folder(folder, automatic)
    connection, meta = rate.open_label_set(str(folder), "episodes", "a humanoid robot doing a handstand")
    assert meta["kind"] == "episodes" and connection.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 8
    person = ["yes", "no", "yes", "yes", "no", "yes", "no", "no"]  # agrees with the automatic success on 6 of 8
    other = ["yes", "no", "yes", "no", "no", "yes", "no", "skip"]
    for item, (a, b) in enumerate(zip(person, other), start=1):
        rate.add_label(connection, item, "ann", a)
        rate.add_label(connection, item, "bob", b)
    lines = rate.report(str(folder), str(folder / rate.DATABASE))
    interval = binomtest(4, 8).proportion_ci(method="wilson")
    assert f"  success rate 0.50 (95% interval {interval.low:.2f}-{interval.high:.2f}, Wilson) over 8 episodes" in lines
    assert "  against the automatic success of 8 episodes: agreement 0.75" in lines
    assert lines[lines.index("  against the automatic success of 8 episodes: agreement 0.75") + 2].split() == [
        "person",
        "yes",
        "3",
        "1",
    ]
    kappa = rate.cohens_kappa(person[:7], other[:7])
    assert f"raters ann and bob: Cohen's kappa {kappa:.2f} over 7 shared items" in lines
    assert rate.cohens_kappa(["yes", "no", "yes", "no"], ["yes", "no", "yes", "no"]) == 1.0
    assert rate.cohens_kappa(["yes", "no", "yes", "no"], ["no", "yes", "no", "yes"]) == -1.0
    assert rate.cohens_kappa(["yes", "yes", "no", "no"], ["yes", "no", "yes", "no"]) == 0.0


def test_an_export_reads_back_as_the_database_does(cartpole_frames, tmp_path):
    folder, _ = cartpole_frames
    connection, _ = rate.open_label_set(str(folder), "frames", UPRIGHT)
    for item, value in ((1, "yes"), (3, "no"), (5, "skip")):
        rate.add_label(connection, item, "ann", value)
    (tmp_path / "out").mkdir()
    result = run_rate("export", folder, "--output", tmp_path / "out" / "labels.csv")
    assert result.returncode == 0, result.stderr
    from_csv = rate.read_labels(str(tmp_path / "out" / "labels.csv"))
    from_database = rate.read_labels(str(folder / rate.DATABASE))
    assert from_csv == from_database and len(from_database[2]) == 3
    assert_one_line_error(run_rate("export", folder, "--output", tmp_path / "out" / "labels.csv"), "exists")


def test_frames_are_sampled_from_a_runs_videos(tmp_path):
    folder = tmp_path / "videos"
    make_episode_folder(folder, [1, 0])
    connection, meta = rate.open_label_set(str(folder), "frames", "x", frames_per_video=3)
    paths = [row[0] for row in connection.execute("SELECT path FROM items ORDER BY id")]
    assert len(paths) == 6 and all(path.startswith("sampled_frames/") and path.endswith(".png") for path in paths)
    first = np.asarray(Image.open(folder / paths[0]))
    assert first.shape == (32, 32, 3) and abs(int(first.mean()) - 60) < 8  # episode 0's first frame (level 60)


def test_a_run_keeps_the_frames_behind_its_grids_as_pngs(tmp_path):
    """The reward window writes its highest- and lowest-reward frames as PNGs named by step, rank and reward."""
    import run_utils
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    window = run_utils.RewardWindow(writer, frequency=4, k=2)
    window.write_if_due(0)
    frames = np.stack([np.full((8, 8, 3), level, np.uint8) for level in (10, 20, 30, 40)])
    window.add(frames, np.array([0.1, 0.4, 0.3, 0.2]), np.zeros(4), np.zeros(4))
    window.write_if_due(4)
    writer.close()
    highest = sorted(os.listdir(tmp_path / "run" / "clip_frames" / "highest"))
    lowest = sorted(os.listdir(tmp_path / "run" / "clip_frames" / "lowest"))
    assert highest == ["step_000000004-1-reward_0.4000.png", "step_000000004-2-reward_0.3000.png"]
    assert lowest == ["step_000000004-1-reward_0.1000.png", "step_000000004-2-reward_0.2000.png"]
    assert np.asarray(Image.open(tmp_path / "run" / "clip_frames" / "highest" / highest[0])).mean() == 20


@needs_browser
def test_a_person_rates_episodes_whose_videos_play_in_the_page(browser, tmp_path):
    """evaluate.py-like videos: the page asks the paper's question, Chromium decodes and plays each video, and the
    answers by key reach the report's success rate."""
    folder = tmp_path / "eval_step_100"
    make_episode_folder(folder, [1, 0, 1])
    server = Server(folder, "--prompt", "a humanoid robot doing a handstand")
    try:
        assert "rating 3 episodes" in server.line
        browser.get(f"{server.url}/?rater=ann")
        assert shown(browser) == ("0 / 3", "eval-episode-0.mp4")
        assert "Does the task hold on at least half of the episode?" in browser.page_source
        for _ in range(100):
            ready, width = browser.execute_script(
                "const v = document.getElementById('item'); return [v.readyState, v.videoWidth]"
            )
            if ready >= 2:
                break
            time.sleep(0.05)
        assert ready >= 2 and width == 32  # decoded: the person sees the episode
        for answered, key in enumerate("yny", start=1):
            press(browser, key, f"{answered} / 3")
        assert "All items rated" in browser.find_element("id", "done").text
    finally:
        server.stop()
    assert [value for _, _, value in labels_in(folder)] == ["yes", "no", "yes"]
    result = run_rate("report", folder)
    assert "success rate 0.67" in result.stdout and "agreement 1.00" in result.stdout
