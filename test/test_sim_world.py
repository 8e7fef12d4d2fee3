"""The simulated world (panoptic_ros.core.sim): real pybullet renders on the CPU.

Verifies: determinism for a seed; every pixel carries exactly one label of the taxonomy and
the segment list agrees with the label image (ids, areas, boxes); depth is positive off the
sky; the camera model agrees with the renderer (a box at a known place appears where the
model projects it); the ground-truth occupancy of a single box is occupied exactly at its
footprint, unknown behind it and free (drivable) or non-drivable in front; every thing class
stands over its footprint polygon; the rendered pixels agree with K to the depth buffer's
precision; a frame with drive_distance is the same scene seen by the same camera from a robot
driven a distance in range along the main road. Does not verify
realism of the images or dataset export (test_sim_export.py).
"""

import dataclasses
import math

import numpy as np
import pytest

from panoptic_ros.core.camera_model import camera_pose_in_base, intrinsics_from_fov, PinholeCamera
from panoptic_ros.core.sim.occupancy_gt import (
    FREE, GridSpec, inside_convex_polygon, NON_DRIVABLE, OCCUPIED, UNKNOWN)
from panoptic_ros.core.sim.taxonomy import BY_NAME, CLASSES, LABEL_DIVISOR
from panoptic_ros.core.sim.world import (GRASS_TOP_Z, render_random_frame, segments_of,
                                         SimConfig, SimWorld)

pytestmark = pytest.mark.pipeline

SMALL = SimConfig(width=160, height=120)


@pytest.fixture(scope='module')
def frames():
    return [render_random_frame(seed, SMALL) for seed in range(6)]


def test_same_seed_same_frame():
    a, b = render_random_frame(11, SMALL), render_random_frame(11, SMALL)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    assert not np.array_equal(a.panoptic, render_random_frame(12, SMALL).panoptic)


def test_driven_frame_sees_the_scene_from_along_the_road():
    driven = render_random_frame(11, dataclasses.replace(SMALL, drive_distance=(2.0, 6.0)))
    position = driven.T_world_base[:2, 3]
    assert 2.0 <= np.hypot(*position) <= 6.0
    with SimWorld(11, SMALL) as world:        # the scene and camera of seed 11
        T_base_optical, K = world.random_camera()
        assert math.atan2(position[1], position[0]) == pytest.approx(world.road_yaw)
        seen = world.render(T_base_optical, K, T_world_base=driven.T_world_base)
    np.testing.assert_array_equal(seen.panoptic, driven.panoptic)
    undriven = render_random_frame(11, SMALL)
    np.testing.assert_array_equal(undriven.T_world_base, np.eye(4))
    assert not np.array_equal(undriven.panoptic, driven.panoptic)


def test_labels_cover_every_pixel_and_match_segments(frames):
    known = {c.id for c in CLASSES}
    for frame in frames:
        assert frame.panoptic.shape == (SMALL.height, SMALL.width)
        assert (frame.panoptic > 0).all()                       # no void pixel
        categories = np.unique(frame.panoptic // LABEL_DIVISOR)
        assert set(categories.tolist()) <= known
        stuff = frame.panoptic % LABEL_DIVISOR == 0
        assert not any(CLASSES[c - 1].is_thing for c in
                       np.unique(frame.panoptic[stuff] // LABEL_DIVISOR))
        assert sum(s['area'] for s in frame.segments) == frame.panoptic.size
        for segment in frame.segments:
            mask = frame.panoptic == segment['id']
            rows, cols = np.nonzero(mask)
            x, y, w, h = segment['bbox']
            assert segment['area'] == mask.sum()
            assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1,
                                            rows.max() + 1)
        assert segments_of(frame.panoptic) == frame.segments
        sky = frame.panoptic == BY_NAME['sky'].id * LABEL_DIVISOR
        assert (frame.depth[~sky] > 0).all() and (frame.depth[sky] == 0).all()


def test_crowds_put_same_class_instances_side_by_side():
    # Over a few seeds some image holds >= 3 instances of one class (the crowd case that the
    # closest-center policy exists for).
    most = 0
    for seed in range(12):
        frame = render_random_frame(seed, SMALL)
        things = [s['category_id'] for s in frame.segments if s['is_thing']]
        most = max([most] + [things.count(c) for c in set(things)])
    assert most >= 3


def single_box_world(road=True):
    world = SimWorld(0, SimConfig(width=320, height=240), randomize=False)
    if road:
        world.add_box([30, 1.0, 0.005], [10, 0, -0.005], 0.0, BY_NAME['road'].id)
    world.add_box([0.5, 0.5, 0.5], [4.0, 0.0, 0.5], 0.0, BY_NAME['wall'].id, footprint=True)
    return world


def test_render_matches_K():
    # Each rendered pixel (u, v) shows the ray K gives it, to the depth buffer's precision,
    # for an off-centre principal point and a rolled, pitched, yawed camera: the ground's
    # rendered depth against the ray's intersection with the ground plane. pybullet's own
    # FOV projection matrix shows the ray of (u - 0.5, v + 0.5): 1e-3 relative error here.
    K = intrinsics_from_fov(320, 240, 60.0)
    K[0, 2], K[1, 2] = 150.0, 130.0
    K[0, 0] *= 1.05
    T = camera_pose_in_base(0.0, 0.0, 1.0, math.radians(10), math.radians(30), 0.3)
    with SimWorld(0, SimConfig(width=320, height=240), randomize=False) as world:
        frame = world.render(T, K)
    v, u = np.mgrid[120:240:3, 0:320:3]
    v, u = v.ravel(), u.ravel()
    rays = PinholeCamera(K, None, 320, 240).rays(np.stack([u, v], 1))   # optical, z = 1
    down = rays @ T[:3, :3].T
    depth = (GRASS_TOP_Z - T[2, 3]) / down[:, 2]               # along the optical axis
    seen = (depth > 0) & (depth < 20)
    assert seen.sum() > 1000
    error = np.abs(frame.depth[v, u][seen] - depth[seen]) / depth[seen]
    assert error.max() < 1e-4, error.max()


def test_camera_model_agrees_with_renderer():
    with single_box_world() as world:
        T = camera_pose_in_base(0.0, 0.0, 1.2, math.radians(2), math.radians(12), 0.0)
        K = intrinsics_from_fov(320, 240, 55)
        frame = world.render(T, K)
    # The box's front face centre (3.5, 0, 0.5) projects onto the wall's pixels, and the
    # wall's pixel extent matches the projection of its visible corners within a pixel.
    camera = PinholeCamera(K, None, 320, 240)
    (u, v), = camera.project_from_base(np.array([[3.5, 0.0, 0.5]]), T)[0]
    wall = frame.panoptic == BY_NAME['wall'].id * LABEL_DIVISOR
    assert wall[int(round(v)), int(round(u))]
    corners = np.array([[3.5, y, z] for y in (-0.5, 0.5) for z in (0.0, 1.0)])
    uv, _ = camera.project_from_base(corners, T)
    rows, cols = np.nonzero(wall)
    assert abs(cols.min() - uv[:, 0].min()) <= 1.5 and abs(cols.max() - uv[:, 0].max()) <= 1.5
    assert abs(rows.max() - uv[:, 1].max()) <= 1.5


@pytest.mark.parametrize('road', [True, False])
def test_single_box_occupancy(road):
    grid = GridSpec()
    with single_box_world(road) as world:
        T = camera_pose_in_base(0.0, 0.0, 1.0, 0.0, math.radians(15), 0.0)
        frame = world.render(T, intrinsics_from_fov(320, 240, 60), grid)
    occupancy = frame.occupancy
    x, y = grid.cell_centres()
    footprint = inside_convex_polygon(x.ravel(), y.ravel(),
                                      frame.footprints[0][1]).reshape(x.shape)
    assert footprint.sum() == 400                               # 1 m x 1 m at 5 cm
    occupied = occupancy == OCCUPIED
    assert not (occupied & ~footprint).any()
    # the whole footprint but, at most, the row behind the front face (x = 3.5), whose
    # centres lie within half a pixel of the face's lower edge in the image: their nearest
    # pixel may show the road in front
    assert not (footprint & ~occupied & (x > 3.5 + grid.resolution)).any()
    assert occupied.sum() >= 380
    behind = (x > 4.6) & (x < 9.0) & (np.abs(y) < 0.3)
    assert (occupancy[behind] == UNKNOWN).all()
    front = (x > 2.0) & (x < 3.45) & (np.abs(y) < 0.3)
    assert (occupancy[front] == (FREE if road else NON_DRIVABLE)).all()
    beside_road = (x > 2.0) & (x < 3.45) & (np.abs(y) > 1.1) & (np.abs(y) < 1.5)
    assert (occupancy[beside_road] == NON_DRIVABLE).all()
    assert (occupancy[x < 1.0] == UNKNOWN).all()                # below the field of view


@pytest.mark.parametrize('name', [c.name for c in CLASSES if c.is_thing])
def test_thing_stands_in_its_footprint(name):
    # Every thing's rendered surface lies over its footprint polygon (the occupancy ground
    # truth's reference), whatever its yaw: back-projected through the depth image, >= 85 %
    # of its pixels fall inside the polygon (rim pixels blend with the background and visual
    # meshes overhang their collision boxes a little: 0.89-1.0 measured), and its lowest
    # points are near the ground. Catches a body placed by its centre of mass (pybullet's
    # reset does) while the polygon was measured in the URDF's link frame: the teddy's
    # inertial origin is 0.07, 0.05 m off (0.7 m at its scale; 0.002 inside), the duck's
    # 0.02 m (0.61 inside).
    cls = BY_NAME[name]
    config = SimConfig(width=320, height=240)
    T = camera_pose_in_base(0.0, 0.0, 1.6, 0.0, math.radians(25), 0.0)
    K = intrinsics_from_fov(320, 240, 60)
    for yaw in (0.0, 2.2):
        with SimWorld(0, config, randomize=False) as world:
            assert world.add_thing(cls, 2.8, 0.3, yaw, scale=cls.scale[1])
            frame = world.render(T, K)
        pid, polygon = frame.footprints[0]
        mask = (frame.panoptic == pid) & (frame.depth > 0)
        assert mask.sum() > 300
        v, u = np.nonzero(mask)
        # (x, y, 1) rays, scaled by depth
        rays = PinholeCamera(K, None, 320, 240).rays(np.stack([u, v], 1))
        points = (rays * frame.depth[v, u][:, None]) @ T[:3, :3].T + T[:3, 3]
        inside = inside_convex_polygon(points[:, 0], points[:, 1], np.asarray(polygon))
        assert inside.mean() >= 0.85, (name, yaw, inside.mean())
        if cls.drop_to_ground:
            assert points[:, 2].min() < 0.1, (name, yaw)
