# Judge a prompt as the paper did, by a person's labels: a local rating page for frames and episodes, SQLite beside them.
# Docs: docs/judging_a_new_prompt.md
# Run: python rate.py serve runs/RUN/clip_frames --prompt "a humanoid robot doing a handstand"
#      python rate.py serve runs/RUN/eval_step_N --prompt "a humanoid robot doing a handstand"   (evaluate.py's videos)
#      python rate.py report runs/RUN/eval_step_N
"""A person's labels, the paper's judge of a reward model, on this machine in minutes.

`serve` shows one item at a time with its question and the prompt, takes yes / no / skip (keys y n s, undo u) and
stores each answer the moment it is given in FOLDER/labels.sqlite, with the rater's name and the time:

- frames: the PNG frames in FOLDER (and its subfolders), or frames sampled from the videos in it with --kind frames;
  the question is "does this frame show the prompt?" (EPIC: clip_reward_epic.py --env labels);
- episodes: evaluate.py's per-episode videos; the question is the paper's rule, "does the task hold on at least half of
  the episode?" (success rate: `report`).

`report` gives, from the labels, the success rate of rated episodes with its 95% interval, the agreement with the
automatic success where evaluate.py wrote one, Cohen's kappa between two raters, and the share of yes per subfolder of
frames (a run's highest- and lowest-reward frames: its hack check). `export` writes every label as CSV.
"""

import csv
import datetime
import glob
import http.server
import json
import mimetypes
import os
import re
import socketserver
import sqlite3
import sys
from urllib.parse import parse_qs, urlsplit
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import tyro

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rate.html")
DATABASE = "labels.sqlite"
LOCK_TIMEOUT_S = 10  # how long a write waits for another writer (a report, a second server) before it is refused
VALUES = ("yes", "no", "skip")
QUESTIONS = {
    "frames": "Does this frame show the prompt?",
    "episodes": "Does the task hold on at least half of the episode?",
}
FRAME_FILES, VIDEO_FILES = (".png", ".jpg", ".jpeg"), (".mp4", ".webm")


class LabelError(ValueError):
    """A label set that cannot be opened, built or written as asked; one line, says what to fix."""


# ---------------------------------------------------------------------------------------------------------------------
# The label set: items and labels in FOLDER/labels.sqlite
# ---------------------------------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, media TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    item_id INTEGER NOT NULL REFERENCES items(id), rater TEXT NOT NULL,
    value TEXT NOT NULL CHECK (value IN ('yes', 'no', 'skip')), time TEXT NOT NULL, PRIMARY KEY (item_id, rater));
"""


def connect(path):
    """A connection to the label set at `path` (WAL: several tabs and a report read and write at once), or LabelError."""
    try:
        connection = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, isolation_level=None)  # autocommit: each answer at once
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.executescript(SCHEMA)
        return connection
    except sqlite3.DatabaseError as error:  # a corrupt file, a locked one past the timeout, a folder without rights
        raise LabelError(f"cannot use {path} as the label database ({error})") from None


def sample_video_frames(video, folder, count):
    """Write `count` evenly spaced frames of `video` as PNGs into `folder`; returns their paths (LabelError if unreadable)."""
    from moviepy import VideoFileClip
    from PIL import Image

    with VideoFileClip(check_video(video), audio=False) as clip:
        times = np.linspace(0, max(clip.duration - 1 / clip.fps, 0), count)
        frames = [clip.get_frame(t) for t in times]
    paths = []
    stem = os.path.splitext(os.path.basename(video))[0]
    for index, frame in enumerate(frames):
        path = os.path.join(folder, f"{stem}-frame-{index:03d}.png")
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


def check_video(video):
    """The video's path, or LabelError unless it decodes (a person would otherwise meet an empty player)."""
    from moviepy import VideoFileClip

    try:
        with VideoFileClip(video, audio=False) as clip:
            clip.get_frame(0)
    except Exception as error:  # moviepy raises OSError, IOError or KeyError for what ffmpeg cannot read
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LabelError(f"cannot read the video {video} ({cause})") from None
    return video


def find_items(folder, kind, frames_per_video):
    """[(path relative to folder, media)] of the label set: PNG/JPG frames (media image) or videos (media video); for
    frames from videos, the sampled PNGs (written once into FOLDER/sampled_frames)."""
    files = sorted(glob.glob(os.path.join(glob.escape(folder), "**", "*"), recursive=True))
    frames = [f for f in files if f.lower().endswith(FRAME_FILES) and "sampled_frames" not in os.path.relpath(f, folder)]
    videos = [f for f in files if f.lower().endswith(VIDEO_FILES)]
    if kind == "episodes":
        found = [(check_video(path), "video") for path in videos]
    elif frames:
        found = [(path, "image") for path in frames]
    else:
        sampled = os.path.join(folder, "sampled_frames")
        os.makedirs(sampled, exist_ok=True)
        found = [(path, "image") for video in videos for path in sample_video_frames(video, sampled, frames_per_video)]
    if not found:
        what = "videos (.mp4, as evaluate.py writes them)" if kind == "episodes" else "PNG/JPG frames or videos"
        raise LabelError(f"{folder} holds no {what} to rate")
    return [(os.path.relpath(path, folder), media) for path, media in found]


def open_label_set(folder, kind, prompt, frames_per_video=5):
    """The label set of `folder` (made on the first start, its items fixed then): (connection, meta). A later start with
    another --kind or --prompt is refused: the labels answer the question they were given."""
    if not os.path.isdir(folder):
        raise LabelError(f"{folder}: no such folder")
    new = not os.path.exists(os.path.join(folder, DATABASE))
    if new and prompt is None:
        raise LabelError("--prompt is needed the first time a folder is rated: the sentence the raters judge")
    items = find_items(folder, kind, frames_per_video) if new else None  # before any file is made
    connection = connect(os.path.join(folder, DATABASE))
    meta = dict(connection.execute("SELECT key, value FROM meta"))
    if not meta:
        if prompt is None:
            raise LabelError("--prompt is needed the first time a folder is rated: the sentence the raters judge")
        items = items or find_items(folder, kind, frames_per_video)
        with connection:
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO items (path, media) VALUES (?, ?)", items)
            connection.executemany("INSERT INTO meta VALUES (?, ?)", [("kind", kind), ("prompt", prompt)])
        meta = {"kind": kind, "prompt": prompt}
    for name, given in (("kind", kind), ("prompt", prompt)):
        if given is not None and given != meta[name]:
            raise LabelError(f"{folder} was rated with --{name} {meta[name]!r}, not {given!r}: use another folder")
    return connection, meta


def state(connection, meta, rater):
    """What the page shows `rater`: the prompt, question, progress and the first item this rater has not rated."""
    total = connection.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    rated = connection.execute("SELECT COUNT(*) FROM labels WHERE rater = ?", (rater,)).fetchone()[0]
    item = connection.execute(
        "SELECT id, path, media FROM items WHERE id NOT IN (SELECT item_id FROM labels WHERE rater = ?) ORDER BY id LIMIT 1",
        (rater,),
    ).fetchone()
    shown = None if item is None else {"id": item[0], "name": item[1], "media": item[2], "url": f"/media/{item[0]}"}
    return {"prompt": meta["prompt"], "kind": meta["kind"], "question": QUESTIONS[meta["kind"]], "rater": rater,
            "total": total, "rated": rated, "item": shown}  # fmt: skip


def add_label(connection, item_id, rater, value):
    """Store (or replace) `rater`'s answer about one item, now; LabelError for an unknown item or value."""
    if value not in VALUES:
        raise LabelError(f"a label is one of {', '.join(VALUES)}, not {value!r}")
    if not isinstance(item_id, int) or connection.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
        raise LabelError(f"no item {item_id!r} in this label set")
    time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    write(connection, "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", (item_id, rater, value, time))


def undo(connection, rater):
    """Remove `rater`'s latest answer: that item is shown again."""
    write(connection, "DELETE FROM labels WHERE rowid = (SELECT MAX(rowid) FROM labels WHERE rater = ?)", (rater,))


def write(connection, statement, parameters):
    """One write, at once; LabelError (nothing written, the page says so) when another program holds the database."""
    try:
        connection.execute(statement, parameters)
    except sqlite3.OperationalError as error:
        raise LabelError(f"the label database cannot be written now ({error}): not saved, try again") from None


def read_labels(path, rater=None):
    """(prompt, kind, [(item path, rater, value)]) from a label set's labels.sqlite or its exported CSV; item paths are
    absolute. With `rater`, that rater's labels only."""
    if path.endswith(".csv"):
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as error:
            raise LabelError(f"cannot read {path} ({error.strerror})") from None
        if not rows or not {"path", "rater", "value", "prompt", "kind"} <= set(rows[0]):
            raise LabelError(f"{path} is not a CSV exported by rate.py export (path, rater, value, prompt, kind)")
        base = os.path.dirname(os.path.abspath(path))
        labels = [(os.path.normpath(os.path.join(base, row["path"])), row["rater"], row["value"]) for row in rows]
        prompt, kind = rows[0]["prompt"], rows[0]["kind"]
    else:
        if not os.path.isfile(path):
            raise LabelError(f"{path}: no such file (a label set's {DATABASE}, or a CSV from rate.py export)")
        connection = connect(path)
        meta = dict(connection.execute("SELECT key, value FROM meta"))
        if not meta:
            raise LabelError(f"{path} holds no label set")
        base = os.path.dirname(os.path.abspath(path))
        query = "SELECT items.path, rater, value FROM labels JOIN items ON items.id = labels.item_id ORDER BY items.id, rater"
        labels = [(os.path.join(base, item), who, value) for item, who, value in connection.execute(query)]
        connection.close()
        prompt, kind = meta["prompt"], meta["kind"]
    if rater is not None:
        labels = [label for label in labels if label[1] == rater]
    return prompt, kind, labels


# ---------------------------------------------------------------------------------------------------------------------
# The server: one page, a JSON API, the items by id (a path in a URL never reaches the filesystem)
# ---------------------------------------------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    folder, database, meta = None, None, None  # set by serve()

    def log_message(self, *args):  # one line per request on the terminal is noise while rating
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def rater(self, value):
        rater = (value or "").strip()
        if not 0 < len(rater) <= 64:
            raise LabelError("a rater's name is 1 to 64 characters")
        return rater

    def do_GET(self):
        url = urlsplit(self.path)
        path, params = url.path, parse_qs(url.query)
        connection = connect(self.database)
        try:
            if path == "/":
                with open(PAGE, "rb") as f:
                    self.send(200, f.read(), "text/html; charset=utf-8")
            elif path == "/api/state":
                self.send(200, state(connection, self.meta, self.rater(params.get("rater", [""])[0])))
            elif re.fullmatch(r"/media/[0-9]{1,12}", path):
                row = connection.execute("SELECT path FROM items WHERE id = ?", (int(path.split("/")[-1]),)).fetchone()
                if row is None:
                    return self.send(404, {"error": "no such item"})
                with open(os.path.join(self.folder, row[0]), "rb") as f:
                    self.send(200, f.read(), mimetypes.guess_type(row[0])[0] or "application/octet-stream")
            elif path == "/export.csv":
                self.send(200, export_csv(connection, self.meta, self.folder, self.folder).encode(), "text/csv; charset=utf-8")
            else:
                self.send(404, {"error": "not found"})
        except LabelError as error:
            self.send(400, {"error": str(error)})
        finally:
            connection.close()

    def do_POST(self):
        connection = connect(self.database)
        try:
            length = int(self.headers.get("Content-Length", 0))
            if not 0 < length <= 4096:
                raise LabelError("a request body of 1 to 4096 bytes")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                raise LabelError("the body is not JSON") from None
            if not isinstance(body, dict):
                raise LabelError("the body is a JSON object")
            rater = self.rater(body.get("rater"))
            if self.path == "/api/label":
                add_label(connection, body.get("item"), rater, body.get("value"))
            elif self.path == "/api/undo":
                undo(connection, rater)
            else:
                return self.send(404, {"error": "not found"})
            self.send(200, state(connection, self.meta, rater))
        except LabelError as error:
            self.send(400, {"error": str(error)})
        finally:
            connection.close()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 64  # several tabs and raters at once: connections wait instead of being reset
    allow_reuse_address = True  # a restart binds at once; a port another server listens on is still refused (Linux)


def export_csv(connection, meta, folder, csv_folder):
    """Every label as CSV: path (of the item, relative to the CSV's folder `csv_folder`), rater, value, time, prompt, kind."""
    import io

    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow(["path", "rater", "value", "time", "prompt", "kind"])
    query = (
        "SELECT items.path, rater, value, time FROM labels JOIN items ON items.id = labels.item_id ORDER BY items.id, rater"
    )
    for item, *rest in connection.execute(query):
        writer.writerow([os.path.relpath(os.path.join(folder, item), csv_folder), *rest, meta["prompt"], meta["kind"]])
    return output.getvalue()


def make_server(folder, meta, host, port):
    """The rating page's server for the label set in `folder` (not yet serving), or LabelError for a port in use."""
    handler = type("LabelSetHandler", (Handler,), {"folder": folder, "database": os.path.join(folder, DATABASE), "meta": meta})
    try:
        return Server((host, port), handler)
    except OSError as error:
        raise LabelError(f"cannot serve on {host}:{port} ({error.strerror}): another --port, or stop what uses it") from None


# ---------------------------------------------------------------------------------------------------------------------
# What the labels give
# ---------------------------------------------------------------------------------------------------------------------


def success_interval(successes, n, confidence=0.95):
    """(rate, low, high): the success rate of n rated episodes and its Wilson score interval (scipy)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return successes / n, float(interval.low), float(interval.high)


def cohens_kappa(first, second):
    """Cohen's kappa of two raters' yes/no answers about the same items: 1 full agreement, 0 chance, < 0 worse."""
    first, second = np.asarray(first) == "yes", np.asarray(second) == "yes"
    observed = np.mean(first == second)
    chance = first.mean() * second.mean() + (1 - first.mean()) * (1 - second.mean())
    return float("nan") if chance == 1 else float((observed - chance) / (1 - chance))


def automatic_success(folder):
    """{video file name: evaluate.py's automatic success (0/1)} from the folder's evaluation.csv, where it wrote one."""
    path = os.path.join(folder, "evaluation.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"eval-episode-{row['episode']}.mp4": int(row["success"]) for row in rows if row.get("success") not in (None, "")}


def report(folder, database):
    """The report's lines for the label set in `folder`."""
    prompt, kind, labels = read_labels(database)
    lines = [f"{folder}: {kind} rated for {prompt!r}"]
    raters = sorted({rater for _, rater, _ in labels})
    if not raters:
        return lines + ["no labels yet"]
    for rater in raters:
        answers = [(os.path.relpath(path, folder), value) for path, who, value in labels if who == rater]
        decided = [(item, value) for item, value in answers if value != "skip"]
        counts = " ".join(f"{value} {sum(v == value for _, v in answers)}" for value in VALUES)
        lines.append(f"rater {rater}: {len(answers)} labels ({counts})")
        if not decided:
            continue
        yes = sum(value == "yes" for _, value in decided)
        if kind == "episodes":
            rate, low, high = success_interval(yes, len(decided))
            lines.append(f"  success rate {rate:.2f} (95% interval {low:.2f}-{high:.2f}, Wilson) over {len(decided)} episodes")
            automatic = automatic_success(folder)
            pairs = [(value == "yes", automatic[os.path.basename(item)]) for item, value in decided
                     if os.path.basename(item) in automatic]  # fmt: skip
            if pairs:
                table = {
                    (p, a): sum(1 for pair in pairs if pair == (p, bool(a))) for p in (True, False) for a in (True, False)
                }
                agree = (table[True, True] + table[False, False]) / len(pairs)
                lines.append(f"  against the automatic success of {len(pairs)} episodes: agreement {agree:.2f}")
                lines.append(f"  {'':>14} {'auto yes':>9} {'auto no':>8}")
                lines.append(f"  {'person yes':>14} {table[True, True]:>9} {table[True, False]:>8}")
                lines.append(f"  {'person no':>14} {table[False, True]:>9} {table[False, False]:>8}")
        else:
            groups = {}
            for item, value in decided:
                groups.setdefault(os.path.dirname(item).split(os.sep)[-1] or ".", []).append(value == "yes")
            for group, answers_in_group in sorted(groups.items()):
                share = np.mean(answers_in_group)
                lines.append(f"  {group}: {share:.2f} of {len(answers_in_group)} frames show the prompt")
    if len(raters) >= 2:
        by_rater = {
            rater: {path: value for path, who, value in labels if who == rater and value != "skip"} for rater in raters
        }
        for i, first in enumerate(raters):
            for second in raters[i + 1 :]:
                shared = sorted(set(by_rater[first]) & set(by_rater[second]))
                if shared:
                    kappa = cohens_kappa([by_rater[first][p] for p in shared], [by_rater[second][p] for p in shared])
                    lines.append(f"raters {first} and {second}: Cohen's kappa {kappa:.2f} over {len(shared)} shared items")
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Serve:
    """Start the rating page for the items in FOLDER (their labels go to FOLDER/labels.sqlite)."""

    folder: tyro.conf.Positional[str]
    """PNG frames (a run's runs/RUN/clip_frames, any folder), or videos (evaluate.py's output folder)"""
    prompt: Optional[str] = None
    """the sentence the raters judge (needed on the first start; later starts take the label set's)"""
    kind: Optional[Literal["frames", "episodes"]] = None
    """frames: "does this frame show the prompt?"; episodes: "does the task hold on at least half of the episode?";
    default: frames for a folder of images, episodes for a folder of videos"""
    frames_per_video: int = 5
    """--kind frames on a folder of videos: this many evenly spaced frames of each"""
    rater: Optional[str] = None
    """the rater's name filled in on the page (each rater has their own labels)"""
    host: str = "127.0.0.1"
    """the address to serve on: this machine only by default"""
    port: int = 8765
    """the port to serve on"""


@dataclass
class Report:
    """Print what the labels in FOLDER give: success rate and interval, agreement, kappa, share of yes per subfolder."""

    folder: tyro.conf.Positional[str]
    """a rated folder (with labels.sqlite)"""


@dataclass
class Export:
    """Write every label in FOLDER's label set as CSV."""

    folder: tyro.conf.Positional[str]
    """a rated folder (with labels.sqlite)"""
    output: str = "labels.csv"
    """the CSV file to write (never over an existing file)"""


SUBCOMMANDS = {"serve": Serve, "report": Report, "export": Export}


def main(command):
    if isinstance(command, Serve):
        if not 0 < command.port < 65536 or command.frames_per_video < 1:
            raise LabelError("--port must be in [1, 65535] and --frames-per-video >= 1")
        kind = command.kind
        if kind is None and os.path.isdir(command.folder):
            names = [name.lower() for _, _, files in os.walk(command.folder) for name in files]
            if not any(name.endswith(FRAME_FILES + VIDEO_FILES) for name in names):
                raise LabelError(f"{command.folder} holds no PNG/JPG frames or videos to rate")
            kind = "frames" if any(name.endswith(FRAME_FILES) for name in names) else "episodes"
        existing = os.path.exists(os.path.join(command.folder, DATABASE))
        connection, meta = open_label_set(command.folder, None if existing and command.kind is None else kind, command.prompt,
                                          command.frames_per_video)  # fmt: skip
        server = make_server(command.folder, meta, command.host, command.port)
        total = connection.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        connection.close()
        rater = f"?rater={command.rater}" if command.rater else ""
        print(f"rating {total} {meta['kind']} for {meta['prompt']!r}: open http://{command.host}:{command.port}/{rater} "
              f"(labels in {os.path.join(command.folder, DATABASE)}; Ctrl-C to stop)", flush=True)  # fmt: skip
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.server_close()
    elif isinstance(command, Report):
        print("\n".join(report(command.folder, os.path.join(command.folder, DATABASE))))
    else:
        if os.path.exists(command.output):
            raise LabelError(f"{command.output} exists: give another --output")
        _, meta = open_label_set(command.folder, None, None)
        connection = connect(os.path.join(command.folder, DATABASE))
        with open(command.output, "w", newline="") as f:
            f.write(export_csv(connection, meta, command.folder, os.path.dirname(os.path.abspath(command.output))))
        print(f"wrote {command.output}")


if __name__ == "__main__":
    command = tyro.extras.subcommand_cli_from_dict(SUBCOMMANDS)
    try:
        main(command)
    except LabelError as error:
        sys.exit(f"error: {error}")
