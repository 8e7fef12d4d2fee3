"""Stage: simulated camera. Randomised pybullet scenes rendered with pixel-exact ground truth.

A scene is built around the robot's base frame (x forward, y left, z up, ground z = 0): a
grass ground plane, one or two road strips, walls, and thing models from pybullet_data
(see taxonomy.py) with random poses, scales, colours and textures, sometimes in crowds of one
class. A camera with random intrinsics (vertical FOV) and extrinsics (height, pitch, small
roll) renders RGB, depth and an object mask with the CPU TinyRenderer; the mask becomes the
panoptic label (id = category * 1000 + instance, the sky is the background).

Everything is deterministic for a seed. No ROS imports.
"""

import contextlib
from dataclasses import dataclass, field
import math
import os

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from panoptic_ros.core.camera_model import (camera_pose_in_base, intrinsics_from_fov,
                                            PinholeCamera, rotation_rpy)
from panoptic_ros.core.sim.occupancy_gt import (
    classify_cells, footprint_owner, GridSpec, labels_at_cells)
from panoptic_ros.core.sim.taxonomy import BY_NAME, LABEL_DIVISOR, THINGS

TEXTURES = ('tex256.png', 'checker_blue.png', 'uvmap.png')
GRASS_TOP_Z = -0.002      # grass sits 2 mm below the road: no z-fighting
ROAD_THICKNESS = 0.01


@dataclass(frozen=True)
class SimConfig:
    """Randomisation of scenes and cameras: (low, high) pairs are uniform ranges, counts
    inclusive; lengths in metres, positions in the base frame (x ahead, y left), colours RGB
    in [0, 1], angles in radians unless named _deg."""

    # Camera.
    width: int = 640
    height: int = 480
    vertical_fov_deg: tuple = (45.0, 75.0)
    camera_height: tuple = (0.3, 2.0)        # metres above the ground
    camera_pitch_deg: tuple = (0.0, 25.0)    # positive looks down
    camera_roll_deg: tuple = (-3.0, 3.0)
    near: float = 0.05
    far: float = 60.0
    # Things.
    num_objects: tuple = (2, 10)             # besides crowds
    area_x: tuple = (1.5, 14.0)              # where objects stand
    area_y: tuple = (-6.0, 6.0)
    placement_attempts: int = 10             # tries for a free spot per object
    thing_recolour_probability: float = 0.5  # one random colour on every link
    # Crowds: instances of one class side by side (overlapping boxes in the image).
    crowd_probability: float = 0.35
    crowd_size: tuple = (3, 5)
    crowd_start_x_max: float = 8.0           # start x from area_x[0] + 1 to this
    crowd_start_y: tuple = (-2.0, 2.0)
    crowd_step_x: tuple = (-0.3, 0.3)        # direction of the row: (this, 1) in x, y
    crowd_spacing: tuple = (0.5, 1.2)        # factor on each step component
    crowd_yaw_jitter: tuple = (-0.3, 0.3)
    # Stuff: ground, roads, walls.
    grass_colours: tuple = ((0.25, 0.55, 0.2), (0.45, 0.5, 0.25), (0.35, 0.3, 0.2))
    road_colours: tuple = ((0.3, 0.3, 0.3), (0.45, 0.42, 0.4), (0.2, 0.2, 0.22))
    single_road_probability: float = 0.7     # else a crossing road as well
    road_width: tuple = (2.5, 7.0)
    road_yaw: tuple = (-0.3, 0.3)            # the main road
    road_ahead: float = 20.0                 # main road centre: this * cos(yaw) ahead
    road_ahead_jitter: tuple = (-1.0, 1.0)
    road_lateral: tuple = (-2.5, 2.5)
    cross_road_yaw: tuple = (1.2, 1.9)
    cross_road_x: tuple = (5.0, 12.0)
    num_walls: tuple = (0, 3)
    wall_length: tuple = (2.0, 8.0)
    wall_height: tuple = (1.0, 3.0)
    wall_x: tuple = (6.0, 20.0)
    wall_side_distance: tuple = (3.0, 9.0)   # |y|, left or right
    # Appearance.
    colour: tuple = (0.05, 0.95)             # range of random colours, per channel
    colour_jitter: float = 0.12              # around a base colour, per channel
    texture_probability: float = 0.3
    sky_colour_top: tuple = (0.45, 1.0)
    sky_colour_bottom: tuple = (0.6, 1.0)
    light_direction: tuple = ((-1.0, -1.0, 1.0), (1.0, 1.0, 3.0))
    light_ambient: tuple = (0.4, 0.8)
    light_diffuse: tuple = (0.3, 0.7)
    light_specular: tuple = (0.0, 0.3)
    shadow_probability: float = 0.5
    # Driving: single frames taken after the robot drove this far (metres, uniform) along the
    # main road from the world origin, as a sequence's frames are; (0, 0) keeps it there.
    drive_distance: tuple = (0.0, 0.0)


@dataclass
class Body:
    """A rendered body: its panoptic id and its ground footprint (a convex polygon [4, 2],
    base frame, metres) when it stands on the ground as an obstacle."""

    uid: int
    panoptic_id: int
    footprint: np.ndarray = None


@dataclass
class Frame:
    """One rendered image with its ground truth.

    rgb uint8 [H, W, 3]; panoptic int32 [H, W] (category * 1000 + instance, every pixel
    labelled); depth float32 [H, W], metres along the optical axis, 0 for the sky; K [3, 3];
    T_base_optical [4, 4]; segments: list of dicts (id, category_id, is_thing, area,
    bbox [x, y, w, h]); footprints: list of (panoptic_id, polygon [4, 2]) of the obstacles in
    the world frame; T_world_base: the robot's pose (identity for single frames unless
    SimConfig.drive_distance moves it);
    occupancy: int8 [grid.height, grid.width] ground-truth grid (occupancy_gt.py) and grid:
    its GridSpec.
    """

    rgb: np.ndarray
    panoptic: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_base_optical: np.ndarray
    segments: list = field(default_factory=list)
    footprints: list = field(default_factory=list)
    occupancy: np.ndarray = None
    grid: GridSpec = None
    T_world_base: np.ndarray = None

    @property
    def camera(self):
        """The PinholeCamera of the image (K, no distortion)."""
        return PinholeCamera(self.K, None, self.rgb.shape[1], self.rgb.shape[0])


def segments_of(panoptic):
    """COCO-style segment list of a panoptic id image (ids sorted)."""
    ids, first, counts = np.unique(panoptic, return_index=True, return_counts=True)
    segments = []
    for segment_id, count in zip(ids.tolist(), counts.tolist()):
        if segment_id == 0:
            continue
        rows, cols = np.nonzero(panoptic == segment_id)
        x0, y0 = int(cols.min()), int(rows.min())
        category = segment_id // LABEL_DIVISOR
        segments.append({'id': segment_id, 'category_id': category,
                         'is_thing': segment_id % LABEL_DIVISOR != 0, 'area': count,
                         'bbox': [x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0]})
    return segments


def _quat_yaw(yaw):
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def _rectangle(lo, hi, x, y, yaw):
    """Corners of the local rectangle [lo, hi] (xy) rotated by yaw about the origin and moved
    to (x, y)."""
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    c, s = math.cos(yaw), math.sin(yaw)
    return corners @ np.array([[c, s], [-s, c]]) + (x, y)


def projection_matrix(K, width, height, near, far):
    """OpenGL projection matrix (column-major, 16 floats, as pybullet takes it) whose
    rendering of a width x height image matches the pinhole K in the OpenCV convention
    (integer pixel coordinates at pixel centres).

    pybullet's TinyRenderer samples pixel (u, v) at the ray that K maps to (u - 0.5, v + 0.5)
    under its own computeProjectionMatrixFOV (measured against rendered ground depth): the
    principal point terms here include that half-pixel offset, so that the labels and depth
    of a Frame agree with its K to the depth buffer's precision (test_render_matches_K).
    """
    K = np.asarray(K, np.float64)
    matrix = np.zeros(16)
    matrix[0] = 2 * K[0, 0] / width
    matrix[5] = 2 * K[1, 1] / height
    matrix[8] = (width - 2 * K[0, 2]) / width
    matrix[9] = (2 * K[1, 2] - height + 2) / height
    matrix[10] = -(far + near) / (far - near)
    matrix[11] = -1.0
    matrix[14] = -2 * far * near / (far - near)
    return matrix.tolist()


@contextlib.contextmanager
def _quiet_stdout():
    """Silence pybullet's C-level prints (URDF importer warnings) on file descriptor 1."""
    saved = os.dup(1)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class SimWorld:
    """One randomised scene in its own pybullet client (DIRECT mode: no window, no GPU)."""

    def __init__(self, seed, config=SimConfig(), randomize=True):
        """randomize=False builds only a grass plane: add bodies with add_box / add_thing."""
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.bodies = {}          # uid -> Body
        self._instances = {}      # category id -> instances so far
        self.road_yaw = 0.0       # heading of the main road (sequences drive along it)
        with _quiet_stdout():
            self.pb = BulletClient(connection_mode=pybullet.DIRECT)
            self.pb.setAdditionalSearchPath(pybullet_data.getDataPath())
            self._textures = [self.pb.loadTexture(name) for name in TEXTURES]
            if randomize:
                self._build()
            else:
                self.add_box([80, 80, 0.01], [20, 0, GRASS_TOP_Z - 0.01], 0.0,
                             BY_NAME['grass'].id)
        cfg, rng = self.config, self.rng
        self.sky = (rng.uniform(*cfg.sky_colour_top, 3), rng.uniform(*cfg.sky_colour_bottom, 3))
        self.light = dict(lightDirection=list(rng.uniform(*cfg.light_direction)),
                          lightAmbientCoeff=float(rng.uniform(*cfg.light_ambient)),
                          lightDiffuseCoeff=float(rng.uniform(*cfg.light_diffuse)),
                          lightSpecularCoeff=float(rng.uniform(*cfg.light_specular)),
                          shadow=int(rng.random() < cfg.shadow_probability))

    def close(self):
        self.pb.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Scene construction.
    def _colour(self, uid, link=-1, base=None, texture=True):
        cfg = self.config
        rgb = self.rng.uniform(*cfg.colour, 3) if base is None else \
            np.clip(np.asarray(base) + self.rng.uniform(-cfg.colour_jitter, cfg.colour_jitter,
                                                        3), 0, 1)
        kwargs = {'rgbaColor': [*rgb, 1.0]}
        if texture and self.rng.random() < cfg.texture_probability:
            kwargs['textureUniqueId'] = self._textures[self.rng.integers(len(self._textures))]
        self.pb.changeVisualShape(uid, link, **kwargs)

    def add_box(self, half_extents, position, yaw, category, footprint=False, instance=0):
        """A box body of a category (stuff: instance 0; a thing: instance >= 1);
        footprint=True registers it as an obstacle."""
        shape = self.pb.createVisualShape(pybullet.GEOM_BOX, halfExtents=half_extents)
        collision = self.pb.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half_extents)
        uid = self.pb.createMultiBody(0, collision, shape, basePosition=position,
                                      baseOrientation=_quat_yaw(yaw))
        polygon = _rectangle(-np.asarray(half_extents[:2]), np.asarray(half_extents[:2]),
                             position[0], position[1], yaw) if footprint else None
        self.bodies[uid] = Body(uid, category * LABEL_DIVISOR + instance, polygon)
        return uid

    def _build(self):
        cfg, rng = self.config, self.rng
        grass, road, wall = BY_NAME['grass'].id, BY_NAME['road'].id, BY_NAME['wall'].id
        uid = self.add_box([80, 80, 0.01], [20, 0, GRASS_TOP_Z - 0.01], 0.0, grass)
        self._colour(uid, base=rng.choice(cfg.grass_colours), texture=False)
        for k in range(1 if rng.random() < cfg.single_road_probability else 2):
            width = rng.uniform(*cfg.road_width)
            yaw = rng.uniform(*cfg.road_yaw) if k == 0 else rng.uniform(*cfg.cross_road_yaw)
            centre = [cfg.road_ahead * math.cos(yaw) + rng.uniform(*cfg.road_ahead_jitter),
                      rng.uniform(*cfg.road_lateral)] \
                if k == 0 else [rng.uniform(*cfg.cross_road_x), 0.0]
            uid = self.add_box([60, width / 2, ROAD_THICKNESS / 2],
                               [centre[0], centre[1], -ROAD_THICKNESS / 2], yaw, road)
            if k == 0:
                self.road_yaw = yaw
            self._colour(uid, base=rng.choice(cfg.road_colours), texture=False)
        for _ in range(rng.integers(cfg.num_walls[0], cfg.num_walls[1] + 1)):
            length, height = rng.uniform(*cfg.wall_length), rng.uniform(*cfg.wall_height)
            x = rng.uniform(*cfg.wall_x)
            y = rng.choice([-1, 1]) * rng.uniform(*cfg.wall_side_distance)
            uid = self.add_box([length / 2, 0.1, height / 2], [x, y, height / 2],
                               rng.uniform(-math.pi, math.pi), wall, footprint=True)
            self._colour(uid)
        placed = []
        if rng.random() < cfg.crowd_probability:
            self._crowd(placed)
        for _ in range(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1)):
            cls = THINGS[rng.integers(len(THINGS))]
            for _attempt in range(cfg.placement_attempts):
                x, y = rng.uniform(*cfg.area_x), rng.uniform(*cfg.area_y)
                if self.add_thing(cls, x, y, rng.uniform(-math.pi, math.pi), placed):
                    break

    def _crowd(self, placed):
        """Instances of one class side by side: overlapping boxes in the image."""
        cfg, rng = self.config, self.rng
        cls = THINGS[rng.integers(len(THINGS))]
        x = rng.uniform(cfg.area_x[0] + 1, cfg.crowd_start_x_max)
        y = rng.uniform(*cfg.crowd_start_y)
        heading = rng.uniform(-math.pi, math.pi)
        step = np.array([rng.uniform(*cfg.crowd_step_x), 1.0])
        for _ in range(rng.integers(cfg.crowd_size[0], cfg.crowd_size[1] + 1)):
            self.add_thing(cls, x, y, heading + rng.uniform(*cfg.crowd_yaw_jitter), placed)
            x = x + step[0] * rng.uniform(*cfg.crowd_spacing)
            y = y + step[1] * rng.uniform(*cfg.crowd_spacing)

    def add_thing(self, cls, x, y, yaw, placed=None, scale=None):
        """Load a thing (taxonomy.SimClass) standing on the ground at (x, y) with yaw, unless
        its footprint would meet one in `placed` (list of (centre, radius), extended).
        Returns True when placed."""
        pb = self.pb
        placed = [] if placed is None else placed
        scale = float(self.rng.uniform(*cls.scale)) if scale is None else scale
        with _quiet_stdout():
            uid = pb.loadURDF(cls.urdf, [x, y, 0], globalScaling=scale, useFixedBase=True)
        boxes = [pb.getAABB(uid, link) for link in range(-1, pb.getNumJoints(uid))]
        # pybullet places a body by its base's centre of mass (the URDF's inertial origin,
        # e.g. 0.07, 0.05, 0.03 for the teddy, times the scale), loadURDF by its link frame:
        # the offset, to place the link frame (in which the box below is measured) at (x, y)
        inertial = np.asarray(pb.getBasePositionAndOrientation(uid)[0]) - (x, y, 0)
        lo = np.min([b[0] for b in boxes], 0) - (x, y, 0)
        hi = np.max([b[1] for b in boxes], 0) - (x, y, 0)
        polygon = _rectangle(lo[:2], hi[:2], x, y, yaw)
        centre, radius = polygon.mean(0), np.linalg.norm(hi[:2] - lo[:2]) / 2
        if any(np.linalg.norm(centre - c) < radius + r for c, r in placed):
            pb.removeBody(uid)
            return False
        z = -lo[2] if cls.drop_to_ground else 0.0
        com = np.array([x, y, z]) + rotation_rpy(0.0, 0.0, yaw) @ inertial
        pb.resetBasePositionAndOrientation(uid, com.tolist(), _quat_yaw(yaw))
        placed.append((centre, radius))
        if self.rng.random() < self.config.thing_recolour_probability:
            base = self.rng.uniform(*self.config.colour, 3)
            for link in range(-1, pb.getNumJoints(uid)):
                self._colour(uid, link, base=base)
        instance = self._instances.get(cls.id, 0) + 1
        self._instances[cls.id] = instance
        self.bodies[uid] = Body(uid, cls.id * LABEL_DIVISOR + instance, polygon)
        return True

    # Cameras and rendering.
    def random_camera(self):
        """(T_base_optical, K) drawn from the config's ranges."""
        cfg, rng = self.config, self.rng
        K = intrinsics_from_fov(cfg.width, cfg.height, rng.uniform(*cfg.vertical_fov_deg))
        T = camera_pose_in_base(0.0, 0.0, rng.uniform(*cfg.camera_height),
                                math.radians(rng.uniform(*cfg.camera_roll_deg)),
                                math.radians(rng.uniform(*cfg.camera_pitch_deg)), 0.0)
        return T, K

    def occupancy(self, panoptic, T_base_optical, K, grid=GridSpec(), T_world_base=None):
        """Ground-truth occupancy grid of a rendered view (its panoptic labels; definition:
        occupancy_gt.py), in the base frame of a robot at pose T_world_base (default: the
        world frame)."""
        T_world_base = np.eye(4) if T_world_base is None else T_world_base
        camera = PinholeCamera(K, None, panoptic.shape[1], panoptic.shape[0])
        points, in_view, seen = labels_at_cells(panoptic, grid, camera, T_base_optical,
                                                self.config.near)
        world = points @ T_world_base[:3, :3].T + T_world_base[:3, 3]
        footprints = [(b.panoptic_id, b.footprint) for b in self.bodies.values()
                      if b.footprint is not None]
        return classify_cells(seen, in_view, footprint_owner(world, footprints), grid)

    def render(self, T_base_optical, K, grid=GridSpec(), T_world_base=None):
        """Render the scene from a camera mounted at T_base_optical on a robot at pose
        T_world_base (default: the world frame), with the ground-truth occupancy on `grid` in
        the robot's base frame. Returns a Frame."""
        cfg = self.config
        width, height = cfg.width, cfg.height
        T_world_base = np.eye(4) if T_world_base is None else T_world_base
        T_world_optical = T_world_base @ T_base_optical
        eye = T_world_optical[:3, 3]
        rotation = T_world_optical[:3, :3]
        view = self.pb.computeViewMatrix(eye, eye + rotation[:, 2], -rotation[:, 1])
        projection = projection_matrix(K, width, height, cfg.near, cfg.far)
        _, _, rgba, depth_buffer, mask = self.pb.getCameraImage(
            width, height, view, projection, renderer=pybullet.ER_TINY_RENDERER, **self.light)
        rgb = np.asarray(rgba, np.uint8).reshape(height, width, 4)[..., :3].copy()
        mask = np.asarray(mask, np.int64).reshape(height, width)
        depth_buffer = np.asarray(depth_buffer, np.float64).reshape(height, width)
        sky = mask < 0
        depth = cfg.far * cfg.near / (cfg.far - (cfg.far - cfg.near) * depth_buffer)
        depth[sky] = 0.0
        # Panoptic ids from body uids; the background is sky.
        lookup = np.zeros(max(self.bodies) + 2, np.int32)
        for uid, body in self.bodies.items():
            lookup[uid + 1] = body.panoptic_id
        lookup[0] = BY_NAME['sky'].id * LABEL_DIVISOR
        panoptic = lookup[mask + 1]
        # Sky: a vertical gradient between two random colours.
        ramp = np.linspace(0, 1, height)[:, None, None]
        sky_rgb = ((1 - ramp) * self.sky[0] + ramp * self.sky[1]) * 255
        rgb[sky] = np.broadcast_to(sky_rgb, rgb.shape)[sky].astype(np.uint8)
        footprints = [(b.panoptic_id, b.footprint) for b in self.bodies.values()
                      if b.footprint is not None]
        return Frame(rgb=rgb, panoptic=panoptic, depth=depth.astype(np.float32), K=K,
                     T_base_optical=T_base_optical, segments=segments_of(panoptic),
                     footprints=footprints, grid=grid, T_world_base=T_world_base,
                     occupancy=self.occupancy(panoptic, T_base_optical, K, grid,
                                              T_world_base))


def along_road(distance, yaw):
    """T_world_base of the robot `distance` metres from the world origin along heading yaw."""
    transform = np.eye(4)
    transform[:3, :3] = rotation_rpy(0.0, 0.0, yaw)
    transform[:3, 3] = (distance * math.cos(yaw), distance * math.sin(yaw), 0.0)
    return transform


def render_random_frame(seed, config=SimConfig()):
    """A new random scene seen by a random camera (the dataset's unit of work), from the
    world origin or, with config.drive_distance, from a random point along the main road."""
    with SimWorld(seed, config) as world:
        T, K = world.random_camera()
        low, high = config.drive_distance
        if high <= 0:                       # no draw: the frames of older datasets stay
            return world.render(T, K)
        return world.render(T, K, T_world_base=along_road(world.rng.uniform(low, high),
                                                          world.road_yaw))


__all__ = ['along_road', 'Body', 'Frame', 'SimConfig', 'SimWorld', 'render_random_frame',
           'segments_of']
