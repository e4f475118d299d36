"""run_utils.RewardWindow: TensorBoard's grids hold exactly the window's k highest- and k lowest-reward frames, in
order, with their rewards; the histogram and direction scalars are the window's; frequency 0 writes nothing."""

import numpy as np
import pytest
from PIL import Image

import run_utils


class RecordingWriter:
    def __init__(self):
        self.images, self.histograms, self.scalars = {}, {}, {}

    def add_image(self, tag, image, step, dataformats):
        assert dataformats == "HWC"
        self.images.setdefault(tag, []).append((step, image))

    def add_histogram(self, tag, values, step):
        self.histograms.setdefault(tag, []).append((step, np.array(values)))

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))


def frame_of(value, size=8):
    """A frame whose pixels name it: every pixel value*10 in red, 255 - value*10 in blue."""
    frame = np.zeros((size, size, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 2] = value * 10, 255 - value * 10
    return frame


def tiles(grid, count, window):
    """The grid's frames (without their label rows), each compared with the thumbnail of the frame it should be."""
    height, width = window.thumbnail_height, grid.shape[1] // count
    return [grid[16 : 16 + height, i * width : (i + 1) * width] for i in range(count)]


def thumbnail(frame, height):
    return np.asarray(Image.fromarray(frame).resize((height, height), Image.BICUBIC))


def test_the_grids_hold_the_k_highest_and_lowest_frames_of_the_window_in_order():
    writer = RecordingWriter()
    window = run_utils.RewardWindow(writer, frequency=100, k=3, thumbnail_height=16)
    rewards = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4]) / 10  # frame i carries reward rewards[i]
    frames = np.stack([frame_of(i) for i in range(10)])
    task = np.arange(10) % 2 == 0
    window.write_if_due(20)  # the run's first step: the first write is at 100
    for start in range(0, 10, 2):  # five vector steps of two envs, the frames in the env's reused buffer
        buffer = frames[start : start + 2].copy()
        window.add(buffer, rewards[start : start + 2], np.full(2, 0.25), np.full(2, 0.75), task=task[start : start + 2])
        buffer[:] = 0  # the env overwrites its frames: the window kept copies
        window.write_if_due(20 + 15 * (start // 2 + 1))  # steps 35 to 95
    assert writer.images == {}  # not yet due
    window.add(frame_of(20)[None], np.array([0.95]), np.array([1.0]), np.array([0.0]), keep=np.array([False]))  # an autoreset
    window.write_if_due(100)

    ((step, highest),) = writer.images["images/highest_clip_reward"]
    ((_, lowest),) = writer.images["images/lowest_clip_reward"]
    assert step == 100 and highest.shape == (16 + 16, 3 * 16, 3)
    for tile, i in zip(tiles(highest, 3, window), [2, 6, 4]):  # rewards 0.9, 0.8, 0.7, best first
        np.testing.assert_array_equal(tile, thumbnail(frames[i], 16))
    for tile, i in zip(tiles(lowest, 3, window), [7, 1, 5]):  # rewards 0.0, 0.1, 0.2, worst first
        np.testing.assert_array_equal(tile, thumbnail(frames[i], 16))
    assert np.all(highest[:16] >= 0) and (highest[:16] < 255).any()  # a label is drawn above the frames
    ((_, histogram),) = writer.histograms["rewards/clip_reward"]
    np.testing.assert_allclose(np.sort(histogram), np.sort(rewards), atol=1e-6)  # the window's, not the autoreset frame's
    assert writer.scalars["rewards/along_goal_direction"] == [(100, 0.25)]
    assert writer.scalars["rewards/off_direction"] == [(100, 0.75)]

    # the next window starts empty: its grid holds only its own frames
    window.add(frames[:1], np.array([0.5]), np.array([0.5]), np.array([0.5]))
    window.write_if_due(150)
    assert len(writer.images["images/highest_clip_reward"]) == 1  # due again at 200
    window.write_if_due(200)
    step, highest = writer.images["images/highest_clip_reward"][1]
    assert step == 200 and highest.shape == (32, 16, 3)
    np.testing.assert_array_equal(tiles(highest, 1, window)[0], thumbnail(frames[0], 16))
    assert writer.scalars["rewards/along_goal_direction"][1] == (200, 0.5)


def test_the_label_says_the_reward_and_whether_the_task_holds():
    labels = []

    class Spy(run_utils.RewardWindow):
        def grid(self, kept):
            labels.extend((round(reward, 3), task) for reward, _, _, task in kept)
            return super().grid(kept)

    window = Spy(RecordingWriter(), frequency=10, k=2, thumbnail_height=8)
    window.write_if_due(0)
    window.add(
        np.stack([frame_of(1), frame_of(2)]), np.array([0.3, 0.6]), np.zeros(2), np.zeros(2), task=np.array([True, False])
    )
    window.write_if_due(10)
    assert labels == [(0.6, False), (0.3, True), (0.3, True), (0.6, False)]


@pytest.mark.parametrize("frequency, writes", [(0, 0), (10, 1), (11, 0)])
def test_frequency_zero_writes_nothing_and_a_write_waits_for_its_step(frequency, writes):
    writer = RecordingWriter()
    window = run_utils.RewardWindow(writer, frequency=frequency, k=2)
    window.write_if_due(1)
    window.add(np.stack([frame_of(1)]), np.array([0.3]), np.zeros(1), np.zeros(1))
    window.write_if_due(10)
    assert len(writer.images.get("images/highest_clip_reward", [])) == writes
    assert len(writer.histograms.get("rewards/clip_reward", [])) == writes
