"""clip_envs.py: the scenes CLIP sees. The paper's humanoid camera and materials, every texture in
use, --textures-dir, MountainCar's car on the track and beside the flag, CartPole's cart in view."""

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import clip_envs
from helpers import assert_one_line_error, run_script

# ------------------------------------------------------------------------------------------------
# Humanoid
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humanoid():
    env = clip_envs.make_humanoid("Humanoid-v5", 100, clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES))
    env.reset(seed=0)
    env.render()  # the renderer (and its GL context) comes with the first frame; body_mask uses it
    yield env
    env.close()


def set_pose(env, torso_height, joints=None, torso_quat=None, torso_x=0.0):
    """Place the humanoid by hand: torso position (m), orientation and joint angles (rad), at rest."""
    model = env.unwrapped.model
    qpos = env.unwrapped.init_qpos.copy()
    qpos[0], qpos[2] = torso_x, torso_height
    if torso_quat is not None:
        qpos[3:7] = torso_quat
    for joint, angle in (joints or {}).items():
        qpos[model.joint(joint).qposadr[0]] = angle
    env.unwrapped.set_state(qpos, np.zeros(model.nv))


def pitch(angle):
    """Quaternion of a rotation by `angle` about the y axis (a body pitched forward or back)."""
    return [np.cos(angle / 2), 0.0, np.sin(angle / 2), 0.0]


STANDING = dict(torso_height=1.4)
KNEELING = dict(torso_height=0.92, joints={"right_knee": -np.pi / 2, "left_knee": -np.pi / 2})  # shins flat behind
LYING_HEAD_TO_CAMERA = dict(torso_height=0.12, torso_quat=pitch(np.pi / 2), torso_x=0.6)
LYING_HEAD_AWAY = dict(torso_height=0.12, torso_quat=pitch(-np.pi / 2), torso_x=-0.6)


def body_mask(env):
    """Pixels showing the humanoid (MuJoCo's segmentation: any geom but the floor)."""
    renderer = env.get_wrapper_attr("renderer")
    renderer.enable_segmentation_rendering()
    try:
        segmentation = env.render()[..., 0]
    finally:
        renderer.disable_segmentation_rendering()
    return (segmentation >= 0) & (segmentation != env.unwrapped.model.geom("floor").id)


def test_camera_sits_where_the_papers_numbers_put_it(humanoid):
    """distance 3.5, azimuth 180, elevation -10, look-at (0, 0, 1): in front of the body (+x), looking back along -x, 10 degrees down."""
    set_pose(humanoid, **STANDING)
    humanoid.render()
    eyes = humanoid.get_wrapper_attr("renderer").scene.camera  # left and right eye, half the (unused) stereo baseline apart
    position = (np.array(eyes[0].pos) + np.array(eyes[1].pos)) / 2
    forward = np.array(eyes[0].forward)
    elevation = np.radians(-10)
    expected_forward = np.array([-np.cos(elevation), 0.0, np.sin(elevation)])
    np.testing.assert_allclose(forward, expected_forward, atol=1e-5)
    np.testing.assert_allclose(position, np.array([0.0, 0.0, 1.0]) - 3.5 * expected_forward, atol=1e-4)  # (3.447, 0, 1.608)


def test_paper_camera_stays_fixed_and_follow_moves_with_the_torso(tmp_path):
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    positions = {}
    for follow in (False, True):
        env = clip_envs.make_humanoid("Humanoid-v5", 100, textures, render_size=64, follow=follow)
        env.reset(seed=0)
        set_pose(env, **STANDING, torso_x=-1.5)  # walked 1.5 m away from the camera
        env.render()
        positions[follow] = np.array(env.get_wrapper_attr("renderer").scene.camera[0].pos)
        env.close()
    assert positions[False][0] == pytest.approx(3.447, abs=1e-3)
    assert positions[True][0] == pytest.approx(3.447 - 1.5, abs=1e-3)


@pytest.mark.parametrize(
    "pose",
    [STANDING, KNEELING, LYING_HEAD_TO_CAMERA, LYING_HEAD_AWAY],
    ids=["standing", "kneeling", "lying-to-camera", "lying-away"],
)
def test_whole_body_is_in_frame(humanoid, pose):
    set_pose(humanoid, **pose)
    frame = humanoid.render()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8
    body = body_mask(humanoid)
    rows, cols = np.nonzero(body)
    assert body.sum() > 2000  # big enough for CLIP to see the pose at 224 px
    assert rows.min() > 5 and rows.max() < 474 and cols.min() > 5 and cols.max() < 474


def test_kneeling_body_is_lower_in_the_frame_than_standing(humanoid):
    tops = []
    for pose in (STANDING, KNEELING):
        set_pose(humanoid, **pose)
        tops.append(np.nonzero(body_mask(humanoid))[0].min())
    assert tops[1] > tops[0] + 40


def test_default_scene_is_the_papers_look(humanoid):
    """Blue sky above, dark grey slate floor below, a light silver body; RGB order matters here."""
    set_pose(humanoid, **STANDING)
    frame = humanoid.render().astype(float)
    sky, floor = frame[:60].reshape(-1, 3).mean(0), frame[-60:].reshape(-1, 3).mean(0)
    assert sky[2] > sky[0] + 50 and sky[2] > 150  # blue
    assert floor.max() < 130 and floor.max() - floor.min() < 25  # dark and grey
    body = frame[body_mask(humanoid)]
    assert body.mean() > floor.mean() + 20 and np.abs(body.mean(0) - body.mean()).max() < 10  # lighter, colourless metal
    import mujoco

    model = humanoid.unwrapped.model
    assert model.light_type[0] == mujoco.mjtLightType.mjLIGHT_DIRECTIONAL and model.light_diffuse[0] == pytest.approx(
        [1, 1, 1]
    )
    assert model.light_specular[0] == pytest.approx([0.5, 0.5, 0.5])
    floor_material = model.geom_matid[model.geom("floor").id]
    assert model.mat_texrepeat[floor_material] == pytest.approx([60, 60]) and model.mat_reflectance[floor_material] == 0
    # MuJoCo's default render quality, as the authors' scene leaves it, at the paper's 480 px
    assert (model.vis.quality.shadowsize, model.vis.quality.offsamples, frame.shape) == (4096, 4, (480, 480, 3))


def test_a_cheaper_render_quality_is_only_what_is_asked():
    """bench/sps.py --humanoid-render: the shadow map and multisampling change; bodies, geoms, materials and physics do not."""
    textures = clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES)
    envs = [
        clip_envs.make_humanoid("Humanoid-v5", 100, textures),
        clip_envs.make_humanoid("Humanoid-v5", 100, textures, 224, quality=(512, 0)),
    ]
    paper, cheaper = [env.unwrapped.model for env in envs]
    for env in envs:
        env.close()
    assert (cheaper.vis.quality.shadowsize, cheaper.vis.quality.offsamples) == (512, 0)
    assert (cheaper.nq, cheaper.ngeom, cheaper.ntex, cheaper.opt.timestep) == (
        paper.nq,
        paper.ngeom,
        paper.ntex,
        paper.opt.timestep,
    )
    assert np.array_equal(cheaper.geom_size, paper.geom_size) and np.array_equal(cheaper.mat_rgba, paper.mat_rgba)


def test_shadows_are_drawn(humanoid):
    import mujoco

    set_pose(humanoid, **STANDING)
    renderer = humanoid.get_wrapper_attr("renderer")
    with_shadow = humanoid.render().astype(float)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    try:
        without_shadow = humanoid.render().astype(float)
    finally:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = True
    darker = (without_shadow - with_shadow).sum(-1) > 60
    assert darker.sum() > 200  # the body's shadow on the floor


def solid_png(path, colour, size=(64, 64)):
    Image.new("RGB", size, colour).save(path)


@pytest.mark.parametrize("texture, region", [("sky.png", "sky"), ("tiles.png", "floor"), ("robot.png", "body")])
def test_each_humanoid_texture_is_used_and_textures_dir_swaps_it(humanoid, tmp_path, texture, region):
    """A folder holding one of the authors' file names replaces that texture only, where it shows."""
    solid_png(tmp_path / texture, (255, 0, 255))
    env = clip_envs.make_humanoid("Humanoid-v5", 100, clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, str(tmp_path)))
    env.reset(seed=0)
    set_pose(humanoid, **STANDING)
    set_pose(env, **STANDING)
    default, swapped = humanoid.render().astype(float), env.render().astype(float)
    body = body_mask(humanoid)
    env.close()
    changed = np.abs(default - swapped).sum(-1) > 30
    regions = {"sky": np.s_[:60], "floor": np.s_[-60:], "body": body}
    assert changed[regions[region]].mean() > 0.5
    untouched = [name for name in regions if name != region]
    for name in untouched:
        mask = np.zeros_like(changed)
        mask[regions[name]] = True
        assert changed[mask & ~body if name != "body" else mask].mean() < 0.2, name


# ------------------------------------------------------------------------------------------------
# --textures-dir errors
# ------------------------------------------------------------------------------------------------


def test_textures_dir_without_any_authors_name_is_an_error(tmp_path):
    solid_png(tmp_path / "something_else.png", (0, 0, 0))
    with pytest.raises(clip_envs.SceneError, match="holds none of sky.png, tiles.png, robot.png"):
        clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, str(tmp_path))
    with pytest.raises(clip_envs.SceneError, match="is not a folder"):
        clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES, str(tmp_path / "missing"))


def test_unreadable_texture_is_an_error(tmp_path):
    (tmp_path / "mountain_car.png").write_bytes(b"not a png")
    with pytest.raises(clip_envs.SceneError, match="cannot read texture .*mountain_car.png"):
        clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES, str(tmp_path))


def test_a_jpeg_named_png_is_an_error_before_mujoco_sees_it(tmp_path):
    Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "tiles.png", format="JPEG")
    with pytest.raises(clip_envs.SceneError, match="tiles.png is a JPEG image; save it as PNG"):
        clip_envs.scene_textures(clip_envs.HUMANOID_TEXTURES, str(tmp_path))


@pytest.mark.parametrize("script", ["sac_clip_humanoid.py", "sac_clip_mountaincar.py"])
def test_scripts_refuse_a_bad_textures_dir_before_any_work(script, tiny_clip_spec, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(script, ["--clip-model", tiny_clip_spec, "--textures-dir", empty], tmp_path)
    assert_one_line_error(result, "error:", "holds none of")
    assert not os.path.exists(tmp_path / "runs")


# ------------------------------------------------------------------------------------------------
# MountainCar
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mountain_scene():
    textures = clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES)
    return clip_envs.MountainCarScene(textures["mountain_car_background.png"], textures["mountain_car.png"])


def track_row(scene, col):
    x = scene.MIN_POSITION + (col + 0.5) / scene.SCALE
    return scene.pixel_of(x, clip_envs.mountain_height(x))[0]


def test_background_mountain_edge_is_gymnasiums_track(mountain_scene):
    """In every column the picture changes across the track line: sky or far hills above, the mountain below."""
    background = np.asarray(mountain_scene.background).astype(float)
    assert background.shape == (400, 600, 3)
    for col in range(5, 600, 10):
        row = int(round(track_row(mountain_scene, col)))
        above = background[max(row - 6, 0) : row - 2, col].mean(0)
        below = background[row + 2 : row + 6, col].mean(0)
        assert np.abs(above - below).sum() > 25, col
    # ... and the upper left of the frame is sky: blue, in RGB order.
    sky = background[:30, :100].reshape(-1, 3).mean(0)
    assert sky[2] > sky[0] + 40


@pytest.mark.parametrize("position", [-1.1, -0.8, -0.52, -0.2, 0.1, 0.3, 0.45])
def test_car_sits_on_the_mountain_line(mountain_scene, position):
    frame = mountain_scene.render(position).astype(float)
    car = np.abs(frame - np.asarray(mountain_scene.background)).sum(-1) > 40
    rows, cols = np.nonzero(car)
    assert 800 < car.sum() < 2500  # one car-sized sprite
    _, expected_col = mountain_scene.pixel_of(position, clip_envs.mountain_height(position))
    assert abs(cols.mean() - expected_col) < 15
    gaps = np.array([track_row(mountain_scene, c) - rows[cols == c].max() for c in np.unique(cols)])
    assert gaps.min() > -2.5  # no part of the car below the track line ...
    assert gaps.min() < 2.5  # ... and its wheels touch it


def test_car_at_the_goal_is_beside_the_flag(mountain_scene):
    background = np.asarray(mountain_scene.background).astype(int)
    yellow = (background[..., 0] > 180) & (background[..., 1] > 150) & (background[..., 2] < 90)
    flag_rows, flag_cols = np.nonzero(yellow)
    assert yellow.sum() > 100
    _, goal_col = mountain_scene.pixel_of(clip_envs.GOAL_POSITION, 0)
    assert goal_col - 2 < flag_cols.min() < goal_col + 6  # the banner starts at the pole, x = 0.45
    frame = mountain_scene.render(clip_envs.GOAL_POSITION).astype(int)
    car = np.abs(frame - background).sum(-1) > 40
    rows, cols = np.nonzero(car)
    assert cols.min() < goal_col < cols.max()  # the car stands at the pole ...
    assert rows.min() < flag_rows.max() + 30  # ... and reaches up near the banner


def test_textured_mountaincar_renders_600x400_and_textures_dir_swaps_the_car(tmp_path):
    env = clip_envs.make_mountaincar("MountainCarContinuous-v0", 50, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES))
    env.reset(seed=0)
    default = env.render()
    Image.new("RGBA", (40, 20), (0, 255, 0, 255)).save(tmp_path / "mountain_car.png")
    swapped_env = clip_envs.make_mountaincar(
        "MountainCarContinuous-v0", 50, clip_envs.scene_textures(clip_envs.MOUNTAINCAR_TEXTURES, str(tmp_path))
    )
    swapped_env.reset(seed=0)
    swapped = swapped_env.render()
    assert default.shape == swapped.shape == (400, 600, 3)
    green = (swapped[..., 1] > 240) & (swapped[..., 0] < 20) & (swapped[..., 2] < 20)
    assert 500 < green.sum() < 1200  # the 40x20 green car, on the track
    assert not ((default[..., 1] > 240) & (default[..., 0] < 20)).any()


# ------------------------------------------------------------------------------------------------
# CartPole
# ------------------------------------------------------------------------------------------------


def cart_pixels(frame):
    """gymnasium draws the cart black."""
    return int((frame.sum(-1) < 30).sum())


def test_cart_stays_in_frame_when_always_pushed_right():
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=True)
    env.reset(seed=0)
    full_cart = cart_pixels(env.render())
    positions = []
    for _ in range(200):
        obs, reward, terminated, truncated, _ = env.step(1)
        positions.append(obs[0])
        assert cart_pixels(env.render()) > 0.4 * full_cart  # at the track's end half the cart is in view
        assert not terminated
    assert truncated
    assert max(positions) == pytest.approx(2.4)  # it reached the end of the track and stopped there
    assert env.unwrapped.state[1] == 0.0


def test_record_video_warns_of_overwriting_only_where_a_video_is(tmp_path):
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir(), used.mkdir()
    (used / "rl-video-episode-0.mp4").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip_envs.RecordVideo(clip_envs.make_cartpole("CartPole-v1", 200, render=True), str(empty)).close()
    assert not [w for w in caught if "Overwriting" in str(w.message)]
    with pytest.warns(UserWarning, match="Overwriting existing videos"):
        clip_envs.RecordVideo(clip_envs.make_cartpole("CartPole-v1", 200, render=True), str(used)).close()


def test_a_video_recorded_across_a_checkpoint_is_whole_after_loading_it(tmp_path):
    """The episode being recorded when a run stops goes on after --resume into the same video, none of its frames lost
    and no earlier video overwritten: the folder ends as a run that never stopped leaves it."""
    import imageio.v2 as imageio

    def make(folder):  # as the training scripts wrap env 0
        env = clip_envs.RecordVideo(clip_envs.make_cartpole("CartPole-v1", 20, render=True), str(folder))
        return clip_envs.FrameInInfo(gym.wrappers.RecordEpisodeStatistics(env), True)

    def play(env, steps):
        for _ in range(steps):
            _, _, _, truncated, _ = env.step(1)
            if truncated:
                env.reset()

    def frame_counts(folder):
        return {path.name: imageio.get_reader(str(path), "ffmpeg").count_frames() for path in folder.glob("*.mp4")}

    uninterrupted, interrupted = make(tmp_path / "uninterrupted"), make(tmp_path / "interrupted")
    for env in (uninterrupted, interrupted):
        env.reset(seed=1)
        play(env, 27)  # episode 0, then 7 steps into episode 1: both recorded
    state = clip_envs.env_state(interrupted)
    interrupted.close()  # a stopped run closes its envs, which saves what the video holds so far
    play(uninterrupted, 13)
    uninterrupted.close()
    resumed = make(tmp_path / "interrupted")
    resumed.reset(seed=1)  # a fresh env's reset starts a recording of its own, which the state replaces
    clip_envs.load_env_state(resumed, state)
    play(resumed, 13)
    resumed.close()
    expected = frame_counts(tmp_path / "uninterrupted")
    assert sorted(expected) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    assert frame_counts(tmp_path / "interrupted") == expected


# gymnasium's env checker sees the inner CartPole's angle outside its own bounds, which CartPoleOnTrack widens
@pytest.mark.filterwarnings("ignore:.*returned by the .step... method is not within the observation space")
def test_cartpole_angle_is_wrapped_and_the_pole_may_fall():
    env = clip_envs.make_cartpole("CartPole-v1", 200, render=False)
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.0, 0.0, np.pi - 0.01, 5.0])
    obs, reward, terminated, _, _ = env.step(0)
    assert -np.pi <= obs[2] < 0  # went over the top and came back as a negative angle
    assert reward == 0.0 and not terminated
    assert env.observation_space.contains(obs)
