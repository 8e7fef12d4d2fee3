"""The demo's pictures, as pure functions: a panoptic image drawn over its camera image, the
class legend, the camera's field of view on the ground, the occupancy map and the animation.

Verifies: outlines at every segment boundary and nowhere inside a segment, a name written at
each thing instance and none for a segment below the area threshold; the legend lists void
and every class; the field-of-view directions of a camera looking ahead are symmetric at
atan(cx / fx); the map and the animation files are written with their sizes and frame count.
Does not verify: how a person reads them (looked at by eye when the demo changes).
"""

import math

import numpy as np
import pytest

from panoptic_ros.core.camera_model import intrinsics_from_fov
from panoptic_ros.core.visualization import draw_panoptic, legend, overlay, colorize_panoptic
from panoptic_ros.demo_figures import fov_on_ground, occupancy_figure, write_animation

pytestmark = pytest.mark.pure

NAMES = ['void', 'road', 'car']
COLORS = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]


def test_draw_panoptic_outlines_and_names():
    rgb = np.full((120, 160, 3), 90, np.uint8)
    panoptic = np.full((120, 160), 1000, np.int64)          # road
    panoptic[30:90, 20:70] = 2001                           # car 1
    panoptic[30:90, 90:140] = 2002                          # car 2
    panoptic[0:3, 0:3] = 2003                               # too small to be named
    drawn = draw_panoptic(rgb, panoptic, 1000, COLORS, NAMES)
    plain = overlay(rgb, colorize_panoptic(panoptic, 1000, COLORS), 0.45, panoptic)
    changed = np.any(drawn != plain, axis=2)                # where names were written
    assert changed[50:70, 25:65].any() and changed[50:70, 95:135].any()
    assert not changed[0:8, 0:12].any()
    # outlines: white on the car's boundary, none in the middle of the road
    assert (drawn[30, 40] == 255).all() and (drawn[110, 80] != 255).any()


def test_legend_lists_void_and_every_class():
    strip = legend(NAMES, COLORS, 400, [False, False, True])
    assert strip.shape[1] == 400 and strip.dtype == np.uint8
    for color in COLORS[1:]:   # each class's colour box is in the strip
        assert np.all(strip == np.array(color, np.uint8), axis=2).any()
    assert np.all(strip == 0, axis=2).sum() > 100            # void's black box


def test_field_of_view_of_a_camera_looking_ahead():
    K = intrinsics_from_fov(640, 480, 60.0)
    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]          # optical z = base x
    T[:3, 3] = [0.3, 0.0, 1.2]
    position, directions = fov_on_ground(T, K, 640)
    assert np.allclose(position, [0.3, 0.0])
    half = math.atan(K[0, 2] / K[0, 0])
    left, right = directions                                 # u = 0 looks left (+y)
    assert np.isclose(math.atan2(left[1], left[0]), half)
    assert np.isclose(math.atan2(right[1], right[0]), -half)


def test_map_and_animation_are_written(tmp_path):
    grid = np.full((40, 60), -1, np.int8)
    grid[10:30, 20:40] = 0
    grid[15:18, 30:33] = 100
    K = intrinsics_from_fov(640, 480, 60.0)
    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    occupancy_figure(tmp_path / 'map.png', [('a', grid), ('b', grid)], 0.1, 0.0, -2.0, T, K,
                     640)
    import cv2
    picture = cv2.imread(str(tmp_path / 'map.png'))
    assert picture is not None and picture.shape[1] > picture.shape[0]
    frames = [np.full((100, 200, 3), 30 * k, np.uint8) for k in range(5)]
    write_animation(tmp_path / 'a.gif', frames, fps=5, max_width=100)
    from PIL import Image
    gif = Image.open(tmp_path / 'a.gif')
    assert gif.size == (100, 50) and gif.n_frames == 5
