"""Occupancy step: project panoptic labels onto the ground plane, obstacles only at their
footprint (after the panoptic head; before the messages).

Frames: labels are in the camera image (OpenCV pixels, CameraInfo K and distortion D); the
grid is a nav_msgs/OccupancyGrid in the base frame (x forward, y left, ground z = 0):
``grid[i, j]`` is the cell whose lower corner is ``origin + (j, i) * resolution``.
`T_base_optical` (4x4) places the camera optical frame in the base frame (from tf2 at the
image stamp, or from parameters).

Per frame, with lookup tables computed once per (camera model, extrinsics, grid):

1. Each cell centre projects (with distortion) to one pixel. The class there decides:
   drivable ground -> FREE (0), other ground -> its configured cost, anything else (an
   obstacle in front of the cell, sky, void) -> UNKNOWN (-1): the cell is hidden or never
   seen. Cells outside the image or behind the camera are UNKNOWN.
2. Obstacles (things, and stuff classes mapped to 'obstacle') are OCCUPIED (100) only at
   their ground footprint: the contact pixels where the segment meets the ground (an
   obstacle pixel whose neighbour below is ground), back-projected through the undistorted
   pixel ray onto z = 0, and `obstacle_depth` metres behind them along the camera ray (the
   part of the footprint a monocular camera cannot see; cells there whose own pixel shows
   ground stay as step 1 says). The rest of the object is never projected, so it does not
   smear over free space (the reason nav2 dropped RGB ray tracing, navigation2 PR #3042).
3. Per thing instance: the mean ground point of its contact pixels, its ground position in
   the base frame (NaN when it never meets visible ground).

Everything is numpy array indexing, no per-pixel Python.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

UNKNOWN, FREE, OCCUPIED = -1, 0, 100
# Role of each category in the class -> occupancy mapping.
ROLE_IGNORE, ROLE_FREE, ROLE_COST, ROLE_OBSTACLE = 0, 1, 2, 3
ROLES = {'ignore': ROLE_IGNORE, 'free': ROLE_FREE, 'cost': ROLE_COST,
         'obstacle': ROLE_OBSTACLE}


@dataclass(frozen=True)
class GridConfig:
    """Grid geometry in the base frame (metres), like nav_msgs/MapMetaData."""
    resolution: float = 0.05
    width: int = 200          # cells along x
    height: int = 200         # cells along y
    origin_x: float = 0.0     # lower corner of cell (0, 0)
    origin_y: float = -5.0
    frame_id: str = 'base_link'

    def __post_init__(self):
        if self.resolution <= 0 or self.width < 1 or self.height < 1:
            raise ValueError(f'grid resolution {self.resolution} must be > 0 and width '
                             f'{self.width}, height {self.height} >= 1')

    def cell_centres(self):
        """(x [height, width], y [height, width]) of every cell centre."""
        x = self.origin_x + (np.arange(self.width) + 0.5) * self.resolution
        y = self.origin_y + (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(x, y)


@dataclass(frozen=True)
class OccupancyConfig:
    """Class -> occupancy mapping and projection options.

    roles: {category id: 'free' | 'cost' | 'obstacle' | 'ignore'}; categories not listed are
    obstacles (things and unknown stuff), void (0) is always ignored.
    costs: {category id: occupancy value 1..99} for 'cost' categories (default `default_cost`).
    obstacle_depth: metres behind the visible contact points counted as occupied.
    max_footprint: contacts of a segment farther than this behind its nearest contact are
    ground seen under or past the object (a table top, a car body), not its footprint.
    fill_things: occupy the convex hull of each thing's footprint band.
    max_range: cells farther than this from the camera (ground distance) stay unknown.
    """
    roles: dict = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    default_cost: int = 50
    obstacle_depth: float = 0.15
    max_footprint: float = 0.7
    fill_things: bool = True
    max_range: float = 20.0
    label_divisor: int = 1000

    def __post_init__(self):
        for cid, role in self.roles.items():
            if role not in ROLES:
                raise ValueError(f'occupancy role {role!r} of category {cid} is not one of '
                                 f'{sorted(ROLES)}')
        for cid, cost in list(self.costs.items()) + [('default', self.default_cost)]:
            if not 0 < cost < 100:
                raise ValueError(f'cost {cost} of category {cid} must be in 1..99')
        if self.obstacle_depth < 0 or self.max_range <= 0:
            raise ValueError('obstacle_depth must be >= 0 and max_range > 0')


def pixel_rays(pixels, K, D=None):
    """Unit-less rays (x, y, 1) in the optical frame of pixels [n, 2] (u, v), undistorted."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
    D = np.zeros(5) if D is None or len(D) == 0 else np.asarray(D, np.float64)
    normalized = cv2.undistortPoints(pixels, np.asarray(K, np.float64), D).reshape(-1, 2)
    return np.concatenate([normalized, np.ones((len(normalized), 1))], 1)


def pixels_to_ground(pixels, K, D, T_base_optical):
    """Ground points (x, y) [n, 2] in the base frame where pixel rays meet z = 0; NaN for
    rays at or above the horizon (never meeting the ground in front of the camera)."""
    rays = pixel_rays(pixels, K, D) @ T_base_optical[:3, :3].T    # base-frame directions
    origin = T_base_optical[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -origin[2] / rays[:, 2]
    t[~(t > 0) | ~np.isfinite(t)] = np.nan
    return origin[:2] + rays[:, :2] * t[:, None]


def ground_to_pixels(points_xy, K, D, T_base_optical):
    """Pixels (u, v) [n, 2] of ground points (x, y, 0) with distortion, and depth [n] along
    the optical axis (<= 0: behind the camera)."""
    points = np.concatenate([np.asarray(points_xy, np.float64),
                             np.zeros((len(points_xy), 1))], 1)
    R, t = T_base_optical[:3, :3], T_base_optical[:3, 3]
    cam = (points - t) @ R                                   # optical frame
    D = np.zeros(5) if D is None or len(D) == 0 else np.asarray(D, np.float64)
    uv, _ = cv2.projectPoints(cam.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                              np.asarray(K, np.float64), D)
    return uv.reshape(-1, 2), cam[:, 2]


def horizon_row(K, T_base_optical, u):
    """Row v (float) of the horizon at column u for an undistorted pinhole camera: pixels
    below it (larger v) see the ground."""
    R = T_base_optical[:3, :3]
    K = np.asarray(K, np.float64)
    # ray(u, v) = K^-1 (u, v, 1); its base z = R[2] . ray = 0 solves linearly for v
    kinv = np.linalg.inv(K)
    a = R[2] @ kinv
    return -(a[0] * u + a[2]) / a[1]


class OccupancyProjector:
    """Projects label images of one camera model onto one grid (see module docstring).

    K [3, 3], D [k] (plumb_bob / rational_polynomial coefficients, may be empty),
    image_size (height, width) of the label images, T_base_optical [4, 4].
    """

    def __init__(self, K, D, image_size, T_base_optical, grid=GridConfig(),
                 config=OccupancyConfig(), num_categories=256):
        self.K = np.asarray(K, np.float64)
        self.D = np.zeros(5) if D is None or len(D) == 0 else np.asarray(D, np.float64)
        self.image_size = tuple(image_size)
        self.T = np.asarray(T_base_optical, np.float64)
        self.grid = grid
        self.config = config
        height, width = self.image_size
        if self.K.shape != (3, 3) or not np.isfinite(self.K).all() or self.K[0, 0] <= 0 or \
                self.K[1, 1] <= 0:
            raise ValueError(f'camera matrix K must be a valid 3x3 intrinsic matrix, got '
                             f'{self.K.tolist()}')
        if self.T[2, 3] <= 0:
            raise ValueError(f'camera height above the ground must be > 0, got {self.T[2, 3]}')
        # class -> role and value tables
        self.role = np.full(num_categories, ROLE_OBSTACLE, np.int8)
        self.role[0] = ROLE_IGNORE
        self.cost = np.zeros(num_categories, np.int8)
        for cid, role in config.roles.items():
            self.role[int(cid)] = ROLES[role]
            self.cost[int(cid)] = config.costs.get(cid, config.default_cost)
        # panoptic id -> role in one lookup (ids beyond the table take the last category's
        # role, negative ids void, as category clipping would)
        self.id_role = np.repeat(self.role, config.label_divisor)
        # ground point of every pixel centre (NaN above the horizon)
        v, u = np.mgrid[0:height, 0:width]
        ground = pixels_to_ground(np.stack([u.ravel(), v.ravel()], 1), self.K, self.D, self.T)
        self.pixel_ground = ground.reshape(height, width, 2).astype(np.float32)
        # rows above this one see no ground: no contact can lie there
        rows = np.nonzero(np.isfinite(self.pixel_ground[..., 0]).any(1))[0]
        self.contact_row0 = max(0, int(rows[0]) - 1) if len(rows) else height
        # pixel of every cell centre; cells out of view / out of range get pixel -1
        cx, cy = (c.ravel() for c in grid.cell_centres())
        uv, depth = ground_to_pixels(np.stack([cx, cy], 1), self.K, self.D, self.T)
        uu, vv = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        camera_xy = self.T[:2, 3]
        in_range = np.hypot(cx - camera_xy[0], cy - camera_xy[1]) <= config.max_range
        in_view = (depth > 1e-3) & (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height) & \
            in_range
        # distortion models fold far-off-image points back in: keep cells whose pixel
        # back-projects to (nearly) the cell itself
        flat = np.where(in_view, vv * width + uu, 0).astype(np.int64)
        back = ground.reshape(-1, 2)[flat]
        in_view &= np.hypot(back[:, 0] - cx, back[:, 1] - cy) < \
            np.maximum(4 * grid.resolution, 0.1 * np.hypot(cx - camera_xy[0], cy - camera_xy[1]))
        # cells in view and their pixels, in pixel order (the per-frame gather from the label
        # image then reads memory in order)
        self.view_cells = np.nonzero(in_view)[0]
        self.view_pixels = flat[in_view]
        order = np.argsort(self.view_pixels, kind='stable')
        self.view_cells, self.view_pixels = self.view_cells[order], self.view_pixels[order]
        self.camera_xy = camera_xy

    def _cells_of(self, xy):
        """Flat cell index of points [n, 2], -1 outside the grid."""
        g = self.grid
        j = np.floor((xy[:, 0] - g.origin_x) / g.resolution)
        i = np.floor((xy[:, 1] - g.origin_y) / g.resolution)
        ok = (j >= 0) & (j < g.width) & (i >= 0) & (i < g.height) & np.isfinite(j + i)
        return np.where(ok, i * g.width + j, -1).astype(np.int64)

    def __call__(self, panoptic):
        """panoptic: int [H, W] ids (category * label_divisor + instance, 0 = void).

        Returns (grid int8 [grid.height, grid.width], instances {panoptic id: (x, y)} of
        things that touch visible ground).
        """
        if tuple(panoptic.shape) != self.image_size:
            raise ValueError(f'labels are {tuple(panoptic.shape)}, the projector was built for '
                             f'{self.image_size}')
        divisor = self.config.label_divisor
        g = self.grid
        ids_flat = np.ascontiguousarray(panoptic).ravel()
        # 1. cells by the class seen at their pixel
        out = np.full(g.height * g.width, UNKNOWN, np.int8)
        seen_ids = np.take(ids_flat, self.view_pixels)
        seen = np.take(self.id_role, seen_ids, mode='clip')
        values = np.full(seen.shape, UNKNOWN, np.int8)
        values[seen == ROLE_FREE] = FREE
        cost_cells = seen == ROLE_COST
        category = np.clip(seen_ids[cost_cells] // divisor, 0, len(self.cost) - 1)
        values[cost_cells] = self.cost[category]
        out[self.view_cells] = values
        shows_ground = np.zeros(g.height * g.width, bool)        # cells whose pixel is ground
        shows_ground[self.view_cells] = (seen == ROLE_FREE) | cost_cells
        # 2. contact pixels: obstacle pixel with ground directly below. Only rows that can
        # see ground (and the one above them) are looked at, and only where the label
        # changes from one row to the next (a contact always does): the roles of those few
        # pixels are looked up, not the whole image's.
        width = panoptic.shape[1]
        lower = ids_flat[self.contact_row0 * width:]
        change = np.flatnonzero(lower[:-width] != lower[width:])
        above, below = lower[change], lower[change + width]
        role_below = np.take(self.id_role, below, mode='clip')
        contact = (np.take(self.id_role, above, mode='clip') == ROLE_OBSTACLE) & \
            ((role_below == ROLE_FREE) | (role_below == ROLE_COST))
        v, u = np.divmod(change[contact], width)
        v += self.contact_row0
        # the contact point is the ground point at the lower edge of the obstacle pixel
        below = self.pixel_ground[v + 1, u].astype(np.float64)
        at = self.pixel_ground[v, u].astype(np.float64)
        points = np.where(np.isfinite(at), (at + below) / 2, below)
        ok = np.isfinite(points).all(1)
        v, u, points = v[ok], u[ok], points[ok]
        ids = above[contact][ok].astype(np.int64)
        # the lowest contact of each segment in each column is where it stands; higher ones
        # (ground seen under a table top or a car body) lie behind it
        order = np.lexsort((-v, u, ids))
        first = np.ones(len(order), bool)
        first[1:] = (ids[order][1:] != ids[order][:-1]) | (u[order][1:] != u[order][:-1])
        lowest = order[first]
        v, u, points, ids = v[lowest], u[lowest], points[lowest], ids[lowest]
        # per segment: contacts farther than max_footprint behind its nearest one are
        # ground seen through or past the object, not its footprint
        rng = np.hypot(points[:, 0] - self.camera_xy[0], points[:, 1] - self.camera_xy[1])
        if len(ids):
            keys, inverse = np.unique(ids, return_inverse=True)
            nearest = np.full(len(keys), np.inf)
            np.minimum.at(nearest, inverse, rng)
            keep = rng <= nearest[inverse] + self.config.max_footprint
            v, u, points, ids = v[keep], u[keep], points[keep], ids[keep]
        instances = {}
        if len(points):
            direction = points - self.camera_xy
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            steps = np.arange(0.0, self.config.obstacle_depth + 1e-9, g.resolution / 2)
            band = points[:, None, :] + steps[None, :, None] * direction[:, None, :]
            cells = self._cells_of(band.reshape(-1, 2)).reshape(band.shape[:2])
            occupied = np.zeros(g.height * g.width, bool)
            occupied[cells[:, 0][cells[:, 0] >= 0]] = True       # contact cells themselves
            behind = np.zeros_like(occupied)
            behind[cells[cells >= 0]] = True
            # things: the convex hull of their contact band on the grid (closes the gaps
            # between columns and under bodies raised above the ground)
            thing = ids % divisor != 0
            keys, inverse = np.unique(ids[thing], return_inverse=True)
            if len(keys) and self.config.fill_things:
                hull_mask = np.zeros((g.height, g.width), np.uint8)
                cell_xy = (band[thing] - (g.origin_x, g.origin_y)) / g.resolution
                for k in range(len(keys)):
                    pts = cell_xy[inverse == k].reshape(-1, 2)
                    pts = pts[np.isfinite(pts).all(1)]
                    if len(pts):
                        hull = cv2.convexHull(np.floor(pts).astype(np.int32))
                        cv2.fillConvexPoly(hull_mask, hull, 1)
                behind |= hull_mask.ravel().astype(bool)
            # behind the contact, a cell whose own pixel shows ground is not the obstacle's
            occupied |= behind & ~shows_ground
            out[occupied] = OCCUPIED
            # 3. per-thing ground position: mean contact point
            if len(keys):
                count = np.bincount(inverse)
                xs = np.bincount(inverse, points[thing, 0]) / count
                ys = np.bincount(inverse, points[thing, 1]) / count
                instances = {int(k): (float(x), float(y)) for k, x, y in zip(keys, xs, ys)}
        return out.reshape(g.height, g.width), instances
