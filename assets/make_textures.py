"""Draw the project's own scene textures, seeded, into assets/textures/ (no image is copied from anywhere).

Names follow the authors' files (github.com/AlignmentResearch/vlmrm), so `--textures-dir` can swap
any of them for the originals:

| file                          | used by     | what                                                             |
| sky.png                       | humanoid    | skybox: blue sky with clouds                                     |
| tiles.png                     | humanoid    | floor: dark slate tiles (repeated 60 x 60 over the 40 m floor)   |
| robot.png                     | humanoid    | body: brushed metal (cube texture, specular 1, shininess 1)      |
| mountain_car_background.png   | mountaincar | 600x400 frame: sky, hazy ranges, the mountain along gymnasium's  |
|                               |             | track (grass, rock, snow), the yellow flag at x = 0.45           |
| mountain_car.png              | mountaincar | RGBA sprite of a shaded red car, wheels on the bottom edge       |

    python assets/make_textures.py              # rewrites assets/textures/*.png (a few seconds)
    python assets/make_textures.py --output-dir /tmp/textures

Everything is numpy noise and shading; the same seed writes the same pixels.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clip_envs import GOAL_POSITION, TEXTURES_DIR, MountainCarScene  # noqa: E402
from clip_envs import mountain_height as track_height  # noqa: E402

# gymnasium's MountainCar frame, exactly as clip_envs.MountainCarScene places the car on it.
MIN_POSITION, WIDTH, HEIGHT, SCALE = (
    MountainCarScene.MIN_POSITION,
    MountainCarScene.WIDTH,
    MountainCarScene.HEIGHT,
    MountainCarScene.SCALE,
)


def smooth_noise(rng, height, width, cells_y, cells_x):
    """Value noise in [0, 1], (height, width), smoothstep-interpolated on a random grid that wraps (tiles seamlessly)."""
    grid = rng.random((cells_y, cells_x))

    def axis(n, cells):
        t = np.arange(n) * cells / n
        i = t.astype(int)
        f = t - i
        return i % cells, (i + 1) % cells, f * f * (3 - 2 * f)

    y0, y1, fy = axis(height, cells_y)
    x0, x1, fx = axis(width, cells_x)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def fractal_noise(rng, height, width, cells=4, octaves=5, aspect=1.0):
    """Sum of octaves of smooth noise (each twice as fine, half as strong), normalised to [0, 1]."""
    total, weight = np.zeros((height, width)), 0.0
    for octave in range(octaves):
        amplitude = 0.5**octave
        cells_y = max(1, int(cells * 2**octave * aspect))
        total += amplitude * smooth_noise(rng, height, width, cells_y, cells * 2**octave)
        weight += amplitude
    total /= weight
    return (total - total.min()) / (total.max() - total.min())


def mix(a, b, t):
    t = np.asarray(t, dtype=np.float64)[..., None] if np.ndim(t) else t
    return np.asarray(a, dtype=np.float64) * (1 - t) + np.asarray(b, dtype=np.float64) * t


def smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


def to_image(rgb):
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def sky_with_clouds(rng, height, width, horizon=1.0, cells=3, cover=0.5):
    """A blue sky, deeper at the top, hazy towards `horizon` (a fraction of the height), with white clouds
    (`cells` across the width; `cover` from 0, none, to 1, overcast)."""
    rows = np.linspace(0, 1, height)[:, None] / horizon
    sky = mix([45, 105, 190], [175, 205, 230], np.clip(rows, 0, 1) ** 1.4 * np.ones((1, width)))
    noise = fractal_noise(rng, height, width, cells=cells, octaves=5, aspect=1.0)
    density = smoothstep(1 - cover, 1.35 - cover, noise)
    # Lit tops, soft grey bellies: shade by how much denser the cloud is a little lower down.
    shade = np.clip(0.97 - 0.6 * (np.roll(density, -height // 40, axis=0) - density), 0.72, 1.0)
    cloud = np.stack([shade * 252, shade * 252, shade * 255], axis=-1)
    return mix(sky, cloud, density**0.7 * 0.95)


def make_sky(rng, size=512):
    """Skybox: MuJoCo puts this one image on all six faces and a frontal camera sees a band across
    its middle, so the blue is even (no horizon) and the clouds are small enough to show there."""
    return to_image(sky_with_clouds(rng, size, size, horizon=4.0, cells=8, cover=0.4))


def make_tiles(rng, size=256, tiles=2, grout=3):
    """Dark slate tiles with grout; each tile its own tone and cleavage grain. Tiles seamlessly."""
    grain = fractal_noise(rng, size, size, cells=4, octaves=6)
    streaks = fractal_noise(rng, size, size, cells=2, octaves=5, aspect=6.0)  # slate's layered look
    tile = size // tiles
    rows, cols = np.mgrid[0:size, 0:size]
    tone = rng.uniform(-12, 12, (tiles, tiles))[rows // tile, cols // tile]
    base = np.array([62, 67, 74], dtype=np.float64)
    slate = base + (tone + 28 * (grain - 0.5) + 16 * (streaks - 0.5))[..., None] * np.array([1.0, 1.0, 1.08])
    # Distance to the nearest tile edge (in pixels) gives the grout and a slight bevel.
    edge = np.minimum(np.minimum(rows % tile, tile - 1 - rows % tile), np.minimum(cols % tile, tile - 1 - cols % tile))
    grout_mask = smoothstep(grout + 1.0, grout - 1.0, edge)
    bevel = 1 - 0.25 * smoothstep(grout + 5.0, grout, edge)
    image = mix(slate * bevel[..., None], [34, 35, 38], grout_mask)
    return to_image(image)


def make_robot(rng, size=256):
    """Brushed metal: a light silver with fine streaks along one direction. Tiles seamlessly."""
    streaks = fractal_noise(rng, size, size, cells=1, octaves=7, aspect=64.0)
    grain = fractal_noise(rng, size, size, cells=16, octaves=3)
    value = 190 + 38 * (streaks - 0.5) + 10 * (grain - 0.5)
    return to_image(value[..., None] * np.array([1.0, 1.01, 1.04]))


def make_mountain_car_background(rng):
    """gymnasium's 600x400 MountainCar frame as a landscape photo: the mountain's edge is the track itself."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    x = MIN_POSITION + (cols + 0.5) / SCALE  # world x of each pixel centre
    y = (HEIGHT - rows - 0.5) / SCALE  # world height of each pixel centre (up is +)
    image = sky_with_clouds(rng, HEIGHT, WIDTH, horizon=0.8, cells=3, cover=0.4)
    haze = np.array([190, 210, 230], dtype=np.float64)

    # Two far ranges, fainter and bluer with distance (aerial perspective), snow on the highest.
    for depth, (base, amplitude, colour) in enumerate([(0.78, 0.16, [120, 140, 165]), (0.55, 0.22, [85, 110, 95])]):
        ridge_noise = fractal_noise(rng, 1, WIDTH, cells=3 + 2 * depth, octaves=6)[0]
        ridge = base + amplitude * (ridge_noise - 0.5) * 2
        body = smoothstep(-0.5 / SCALE, 0.5 / SCALE, ridge[None, :] - y)
        texture = fractal_noise(rng, HEIGHT, WIDTH, cells=8, octaves=5)
        rock = mix(colour, np.array(colour) * 0.75, texture)
        snow = smoothstep(0.02, 0.0, ridge[None, :] - y) * smoothstep(0.8, 0.9, ridge[None, :])[..., None][..., 0]
        rock = mix(rock, [225, 232, 240], snow * 0.8)
        rock = mix(rock, haze, 0.55 - 0.25 * depth)
        image = mix(image, rock, body)

    # The mountain itself: its upper edge is gymnasium's track.
    surface = track_height(x)
    below = surface - y  # > 0 inside the mountain (world units)
    slope = np.abs(np.cos(3 * x) * 1.35)
    texture = fractal_noise(rng, HEIGHT, WIDTH, cells=10, octaves=6)
    detail = fractal_noise(rng, HEIGHT, WIDTH, cells=40, octaves=3)
    # Light from the upper left on a bumpy face: shade by the bump map's gradient.
    bump = 0.7 * texture + 0.3 * detail
    light = np.clip(1.0 + 6.0 * (np.roll(bump, 1, axis=1) - bump) + 4.0 * (np.roll(bump, 1, axis=0) - bump), 0.6, 1.3)
    grass = mix([58, 98, 38], [110, 150, 60], texture)
    rock = mix([92, 82, 72], [150, 140, 128], texture)
    earth = mix([82, 64, 45], [120, 96, 70], detail)
    snow = mix([170, 180, 195], [232, 236, 242], detail)  # in shade it reads as snow, not as the clouds behind
    # Grass on the gentle upper layer, rock on steep or deep parts, earth in between, snow high up.
    rockiness = np.clip(smoothstep(0.12, 0.3, below + 0.12 * (texture - 0.5)) + 0.6 * smoothstep(1.1, 1.35, slope), 0, 1)
    ground = mix(mix(grass, earth, smoothstep(0.08, 0.14, below + 0.06 * (detail - 0.5)) * 0.6), rock, rockiness)
    snowline = smoothstep(0.84, 0.92, y + 0.1 * (texture - 0.5)) * smoothstep(0.1, 0.0, below) * smoothstep(0.3, 0.6, detail)
    ground = mix(ground, snow, snowline)
    ground = ground * light[..., None]
    ground = mix(ground, haze, 0.12)  # a little haze on the near mountain too
    coverage = smoothstep(-0.5 / SCALE, 0.5 / SCALE, below)  # anti-aliased edge along the track
    image = mix(image, ground, coverage)

    # The yellow flag at the goal, as in gymnasium's drawing: a 50 px pole, the banner at its top.
    flag_col = (GOAL_POSITION - MIN_POSITION) * SCALE
    flag_base = HEIGHT - track_height(GOAL_POSITION) * SCALE
    pole = (np.abs(cols + 0.5 - flag_col) < 1.5) & (rows > flag_base - 50) & (rows < flag_base + 2)
    image[pole] = mix([70, 70, 72], [150, 150, 155], (rows[pole] % 7) / 7)
    banner_u = cols + 0.5 - flag_col  # along the banner
    banner_v = rows - (flag_base - 50)  # down from the pole's top
    wave = 2.0 * np.sin(banner_u / 6.0)
    banner = (banner_u > 1.5) & (banner_u < 30) & (banner_v > wave) & (banner_v < 16 + wave - banner_u * 0.1)
    shade = 0.85 + 0.15 * np.cos(banner_u / 6.0)
    image[banner] = (np.array([245, 205, 30]) * shade[banner][:, None]).clip(0, 255)
    return to_image(image)


def make_mountain_car(width=64, height=32, supersample=4):
    """RGBA sprite of a red car, wheels touching the bottom edge; drawn large and shrunk for smooth edges."""
    w, h = width * supersample, height * supersample
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (u + 0.5) / w, 1 - (v + 0.5) / h  # u: 0 rear to 1 front; v: 0 bottom to 1 top (aspect 2:1)
    rgba = np.zeros((h, w, 4))

    def paint(mask, colour):
        rgba[mask, :3] = colour if np.ndim(colour) == 1 else colour[mask]
        rgba[mask, 3] = 255

    def rounded_box(u0, u1, v0, v1, radius):
        cu, cv, hu, hv = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
        qu = np.abs(u - cu) * 2 - hu * 2 + radius  # u spans twice v's length: measure in v units
        qv = np.abs(v - cv) - hv + radius
        return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0) - radius < 0

    # Body: deep red, lit from above (gradient), a bright highlight line along the shoulder.
    body = rounded_box(0.02, 0.98, 0.2, 0.55, 0.12)
    body_shade = mix([120, 10, 15], [225, 40, 45], smoothstep(0.2, 0.55, v))
    highlight = np.exp(-(((v - 0.5) / 0.03) ** 2))[..., None] * np.array([60, 60, 60])
    paint(body, np.clip(body_shade + highlight, 0, 255))
    # Cabin with windows reflecting the sky.
    cabin = rounded_box(0.22, 0.72, 0.45, 0.92, 0.2)
    paint(cabin & ~body, mix([150, 15, 20], [210, 35, 40], smoothstep(0.5, 0.9, v)))
    window_colour = mix([40, 60, 90], [170, 200, 230], smoothstep(0.55, 0.88, v))
    paint(rounded_box(0.27, 0.45, 0.56, 0.85, 0.08), window_colour)
    paint(rounded_box(0.49, 0.67, 0.56, 0.85, 0.08), window_colour)
    # Lights, bumper, door line.
    paint(rounded_box(0.93, 0.99, 0.38, 0.47, 0.03), np.array([255, 235, 150]))
    paint(rounded_box(0.01, 0.05, 0.38, 0.46, 0.03), np.array([150, 10, 10]))
    paint(rounded_box(0.0, 1.0, 0.2, 0.25, 0.05), np.array([60, 60, 65]))
    paint(body & (np.abs(u - 0.47) < 0.004) & (v > 0.28) & (v < 0.52), np.array([110, 10, 15]))
    # Wheels: black tyres touching the bottom edge, shaded silver rims.
    for centre in (0.23, 0.77):
        r = np.hypot((u - centre) * 2, v - 0.2)
        paint(r < 0.2, np.array([25, 25, 28]))
        paint(r < 0.11, mix([120, 120, 125], [215, 215, 220], smoothstep(0.0, 0.3, v)))
        paint(r < 0.035, np.array([70, 70, 75]))
    sprite = Image.fromarray(np.round(rgba).astype(np.uint8))  # 4 channels: RGBA
    # Shrink in premultiplied alpha so edges do not take the transparent pixels' colour.
    return sprite.convert("RGBa").resize((width, height), Image.LANCZOS).convert("RGBA")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default=TEXTURES_DIR, help="where the PNGs go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    makers = {
        "sky.png": make_sky,
        "tiles.png": make_tiles,
        "robot.png": make_robot,
        "mountain_car_background.png": make_mountain_car_background,
        "mountain_car.png": lambda rng: make_mountain_car(),
    }
    for index, (name, make) in enumerate(makers.items()):
        rng = np.random.default_rng([args.seed, index])  # one stream per texture: changing one leaves the others
        path = os.path.join(args.output_dir, name)
        make(rng).save(path, optimize=True)
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
