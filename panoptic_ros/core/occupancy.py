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
   their ground footprint, and only in cells the obstacle itself hides (cells whose pixel
   shows that segment: the camera sees the obstacle standing there). The footprint starts
   at the contact pixels where the segment meets the ground (the lowest obstacle pixel of a
   column with ground directly below), back-projected through the undistorted pixel ray
   onto z = 0; how far it reaches behind them, which a monocular camera does not see, is
   completed from a prior:
   - things with a footprint prior (length, width, contact offset, height per class): a
     rectangle. Its orientation is the one whose two camera-facing edges lie closest to the
     contacts (L-shape fitting; contacts farther than the prior's diagonal behind the
     nearest one are ground seen under the body and left out), its camera-facing sides pass
     through the contacts, its size is the prior's (times footprint_scale) and the contact
     offset moves it towards the camera (a rounded body hides the ground under its front,
     so its visible contact lies inside its footprint). Which side is the long one, and
     which of the orientations that fit the contacts nearly as well, the segment's
     silhouette decides: a body standing on the ground spans the same bearings from the
     camera as its footprint, and a box of the prior's height on the rectangle reaches the
     silhouette's top row; the best match wins (a side cut off by the image border or next
     to another obstacle only bounds it).
   - other obstacles (walls, things without a prior): `obstacle_depth` metres behind the
     contacts: perpendicular to a wall's face (its direction from neighbouring contacts),
     at most GRAZING times that along the ray; along the rays for a thing, filled to the
     convex hull of that band.
   The rest of the object is never projected, so it does not smear over free space (the
   reason nav2 dropped RGB ray tracing, navigation2 PR #3042).
3. Per thing instance: its ground position in the base frame, the centre of its footprint
   rectangle, or the mean of its contact points without a prior (only things that meet
   visible ground get one).

Everything is numpy array indexing and a loop over the frame's obstacle segments, no
per-pixel Python.
"""

from dataclasses import dataclass, field
import math

import cv2
import numpy as np

UNKNOWN, FREE, OCCUPIED = -1, 0, 100
# Role of each category in the class -> occupancy mapping.
ROLE_IGNORE, ROLE_FREE, ROLE_COST, ROLE_OBSTACLE = 0, 1, 2, 3
ROLES = {'ignore': ROLE_IGNORE, 'free': ROLE_FREE, 'cost': ROLE_COST,
         'obstacle': ROLE_OBSTACLE}
# Footprint completion (OccupancyProjector._rectangles, _band). Contacts within FACE_TOL
# metres of a camera-facing edge are on that face; CLOSE (m) caps a contact's closeness
# weight in the L-shape fit, over orientations every 3 degrees; orientations within
# CANDIDATE_SCORE of the best fit are candidates for the silhouette test; a side whose
# direction is within acos(SIDE_COS) of the viewing direction has its far end unseen. The
# silhouette test adds the bearing mismatches (rad) of the two sides and, top_weight times
# (OccupancyConfig), the top row's (rows / fy, beyond SILHOUETTE_ROW_STEP rows, the rows
# scanned). A wall's face direction is taken over FACE_WINDOW contacts either side, and a
# wall seen at a grazing angle is marked at most GRAZING times its depth along the ray.
FACE_TOL, CLOSE, CANDIDATE_SCORE, SIDE_COS = 0.1, 0.02, 0.9, 0.5
SILHOUETTE_ROW_STEP = 4
FACE_WINDOW, GRAZING = 3, 8
SUBPIXEL_BITS = 4          # fixed-point bits of the grid polygons filled with OpenCV
_THETA = np.radians(np.arange(0.0, 180.0, 3.0))      # e1 of 30 orientations, then their e2
ORIENTATIONS = np.stack([np.cos(_THETA), np.sin(_THETA)], 1)


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
class FootprintPrior:
    """A thing class's footprint on the ground (metres): the sides of its rectangle and how
    far the footprint reaches in front of (towards the camera from) the visible contact."""
    length: float
    width: float
    contact_offset: float = 0.0
    height: float = 0.0       # of the body's top above the ground; 0: not used

    def __post_init__(self):
        if not (0 < self.width <= self.length < math.inf) or \
                not 0 <= self.contact_offset < self.length or not 0 <= self.height < math.inf:
            raise ValueError(f'footprint prior {self} needs 0 < width <= length, '
                             f'0 <= contact_offset < length and height >= 0')


@dataclass(frozen=True)
class OccupancyConfig:
    """Class -> occupancy mapping and projection options.

    roles: {category id: 'free' | 'cost' | 'obstacle' | 'ignore'}; categories not listed are
    obstacles (things and unknown stuff), void (0) is always ignored.
    costs: {category id: occupancy value 1..99} for 'cost' categories (default `default_cost`).
    footprints: {category id: FootprintPrior or (length, width, contact_offset)} of thing
    classes whose footprint is completed as a rectangle.
    footprint_scale: fraction of a prior's length and width marked occupied (the rectangle's
    pose is estimated: cells near its corners are occupied with probability < 0.5; 1 marks
    the whole prior).
    top_weight: weight of the silhouette's top row against its sides' bearings when a prior
    has a height. footprint_scale and top_weight are chosen on the priors' calibration
    frames (sim.priors).
    obstacle_depth: metres behind the visible contacts of an obstacle without a prior marked
    occupied: perpendicular to a wall's face, along the camera rays of a thing.
    max_footprint: contacts of a thing without a prior farther than this behind its nearest
    contact are ground seen under or past the object (a table top, a car body), not its
    footprint.
    fill_things: occupy the convex hull of the band of a thing without a prior.
    max_range: cells farther than this from the camera (ground distance) stay unknown.
    """
    roles: dict = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    default_cost: int = 50
    footprints: dict = field(default_factory=dict)
    footprint_scale: float = 0.95
    top_weight: float = 2.0
    obstacle_depth: float = 0.2
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
        if self.obstacle_depth < 0 or self.max_range <= 0 or self.max_footprint <= 0:
            raise ValueError('obstacle_depth must be >= 0, max_range and max_footprint > 0')
        if not 0 < self.footprint_scale <= 2:
            raise ValueError(f'footprint_scale {self.footprint_scale} must be in (0, 2]')
        priors = {int(cid): prior if isinstance(prior, FootprintPrior) else
                  FootprintPrior(*prior) for cid, prior in self.footprints.items()}
        object.__setattr__(self, 'footprints', priors)


def pixel_rays(pixels, K, D=None):
    """Unit-less rays (x, y, 1) in the optical frame of pixels [n, 2] (u, v), undistorted."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
    D = np.zeros(5) if D is None or len(D) == 0 else np.asarray(D, np.float64)
    normalized = cv2.undistortPoints(pixels, np.asarray(K, np.float64), D).reshape(-1, 2)
    return np.concatenate([normalized, np.ones((len(normalized), 1))], 1)


def _ray_ground(rays, origin):
    """Where base-frame rays [n, 3] from origin meet z = 0 (x, y) [n, 2]; NaN for rays at or
    above the horizon."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -origin[2] / rays[:, 2]
    t[~(t > 0) | ~np.isfinite(t)] = np.nan
    return origin[:2] + rays[:, :2] * t[:, None]


def pixels_to_ground(pixels, K, D, T_base_optical):
    """Ground points (x, y) [n, 2] in the base frame where pixel rays meet z = 0; NaN for
    rays at or above the horizon (never meeting the ground in front of the camera)."""
    rays = pixel_rays(pixels, K, D) @ T_base_optical[:3, :3].T    # base-frame directions
    return _ray_ground(rays, T_base_optical[:3, 3])


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
        self.distorted = bool(self.D.any())
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
        value = np.where(self.role == ROLE_FREE, FREE,
                         np.where(self.role == ROLE_COST, self.cost, UNKNOWN)).astype(np.int8)
        self.id_value = np.repeat(value, config.label_divisor)   # a ground cell's value
        self._index_of = np.full(len(self.id_role), -1, np.int64)   # scratch: id -> index
        # footprint priors by category: length, width (times footprint_scale), contact
        # offset, height, the diagonal of the unscaled rectangle
        self._has_prior = np.zeros(num_categories, bool)
        self._prior_of = np.zeros((num_categories, 5))
        for cid, prior in config.footprints.items():
            if int(cid) < num_categories:
                self._has_prior[int(cid)] = True
                self._prior_of[int(cid)] = (
                    prior.length * config.footprint_scale, prior.width * config.footprint_scale,
                    prior.contact_offset, prior.height, math.hypot(prior.length, prior.width))
        # ground point of every pixel centre (NaN above the horizon) and the bearing of its
        # ray (azimuth in the base frame, from the optical axis's heading)
        v, u = np.mgrid[0:height, 0:width]
        rays = pixel_rays(np.stack([u.ravel(), v.ravel()], 1), self.K, self.D) @ self.T[:3, :3].T
        ground = _ray_ground(rays, self.T[:3, 3])
        self.pixel_ground = ground.reshape(height, width, 2).astype(np.float32)
        self.heading = math.atan2(self.T[1, 2], self.T[0, 2])
        bearing = self._bearing(rays[:, :2]).reshape(height, width).astype(np.float32)
        self.row_bearing = np.ascontiguousarray(bearing[::SILHOUETTE_ROW_STEP])
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

    def _bearing(self, directions):
        """Azimuth (rad) of base-frame directions [n, 2] from the camera's heading."""
        angle = np.arctan2(directions[:, 1], directions[:, 0]) - self.heading
        return (angle + math.pi) % (2 * math.pi) - math.pi

    def _cells_of(self, xy):
        """Flat cell index of points [n, 2], -1 outside the grid."""
        g = self.grid
        j = np.floor((xy[:, 0] - g.origin_x) / g.resolution)
        i = np.floor((xy[:, 1] - g.origin_y) / g.resolution)
        ok = (j >= 0) & (j < g.width) & (i >= 0) & (i < g.height) & np.isfinite(j + i)
        return np.where(ok, i * g.width + j, -1).astype(np.int64)

    def contacts(self, panoptic):
        """(columns [n], ground points [n, 2], segment ids [n]) of a label image's contacts
        (see _contacts)."""
        panoptic = np.ascontiguousarray(panoptic)
        return self._contacts(panoptic.ravel(), panoptic.shape[1])

    def _contacts(self, ids_flat, width):
        """Contact columns u [n], their ground points [n, 2] and segment ids [n], sorted by
        segment then column: per segment and column the lowest obstacle pixel with ground
        directly below (higher ones, ground seen under a table top or a car body, lie behind
        it). Only rows that can see ground (and the one above them) are looked at, and only
        where the label changes from one row to the next (a contact always does): the roles
        of those few pixels are looked up, not the whole image's."""
        lower = ids_flat[self.contact_row0 * width:]
        change = np.flatnonzero(lower[:-width] != lower[width:])
        above, below = lower[change], lower[change + width]
        role_below = np.take(self.id_role, below, mode='clip')
        contact = (np.take(self.id_role, above, mode='clip') == ROLE_OBSTACLE) & \
            ((role_below == ROLE_FREE) | (role_below == ROLE_COST))
        ids = above[contact].astype(np.int64)
        v, u = np.divmod(change[contact], width)
        # the lowest of each segment and column: its last in raster order (sorted by key)
        key = ids * width + u
        _, last = np.unique(key[::-1], return_index=True)
        lowest = len(key) - 1 - last
        ids, u, v = ids[lowest], u[lowest], v[lowest] + self.contact_row0
        # the contact point is the ground point at the lower edge of the obstacle pixel
        below = self.pixel_ground[v + 1, u].astype(np.float64)
        at = self.pixel_ground[v, u].astype(np.float64)
        points = np.where(np.isfinite(at), (at + below) / 2, below)
        ok = np.isfinite(points).all(1)
        return u[ok], points[ok], ids[ok]

    def _silhouettes(self, panoptic, wanted):
        """[S, 5] of the wanted segment ids [S]: the extreme bearings (azimuth from the
        camera's heading in the base frame) of their pixels, found at the horizontal label
        changes and the image borders, whether each only bounds the body's (1: its outer
        neighbour is the image border or another obstacle, which may cut the body off), and
        the silhouette's top row; NaN for a segment not found (the rows are scanned every
        SILHOUETTE_ROW_STEP)."""
        rows = np.ascontiguousarray(panoptic[::SILHOUETTE_ROW_STEP])   # sides are steep
        height, width = rows.shape
        flat, bearings = rows.ravel(), self.row_bearing.ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1])
        change = change[(change + 1) % width != 0]          # not from one row to the next
        # boundary pixels: both sides of each change, then the left and right image borders
        pixel = np.concatenate([change, change + 1, np.arange(0, flat.size, width),
                                np.arange(width - 1, flat.size, width)])
        outer = np.concatenate([flat[change + 1], flat[change], np.full(2 * height, -1)])
        self._index_of[wanted] = np.arange(len(wanted))
        which = np.take(self._index_of, flat[pixel], mode='clip')
        self._index_of[wanted] = -1
        mine = which >= 0
        which, pixel, outer = which[mine], pixel[mine], outer[mine]
        result = np.full((len(wanted), 5), np.nan)
        if not len(which):
            return result
        bearing = bearings[pixel]
        order = np.lexsort((bearing, which))
        which, pixel, outer, bearing = which[order], pixel[order], outer[order], bearing[order]
        starts = np.flatnonzero(np.diff(which, prepend=-1))
        ends = np.append(starts[1:], len(which)) - 1
        cut = (outer < 0) | (np.take(self.id_role, outer, mode='clip') == ROLE_OBSTACLE)
        found = which[starts]
        result[found] = np.stack([bearing[starts], bearing[ends], cut[starts], cut[ends],
                                  np.minimum.reduceat(pixel // width, starts) *
                                  SILHOUETTE_ROW_STEP], 1)
        return result

    def _rectangles(self, points, owner, category, silhouette):
        """Footprint rectangles (corners [S, 4, 2], counter-clockwise) of S things at once
        (module docstring, step 2) from their contact points [N, 2], sorted by owner [N]
        (0..S-1), with their categories [S] (which have footprint priors) and silhouettes
        [S, 5] (_silhouettes)."""
        prior = self._prior_of[category]        # [S]: length, width (scaled), offset, height
        cam = self.camera_xy
        count = len(category)
        counts = np.bincount(owner, minlength=count)
        starts = np.cumsum(counts) - counts
        rng = np.hypot(points[:, 0] - cam[0], points[:, 1] - cam[1])
        # contacts farther behind the nearest one than the prior's diagonal are ground seen
        # under or past the body
        keep = rng <= (np.minimum.reduceat(rng, starts) + prior[:, 4])[owner]
        points, owner = points[keep], owner[keep]
        counts = np.bincount(owner, minlength=count)          # the nearest is always kept
        starts = np.cumsum(counts) - counts
        centre = np.add.reduceat(points, starts) / counts[:, None]
        view = centre - cam                                   # viewing direction [S, 2]
        view /= np.maximum(np.hypot(view[:, :1], view[:, 1:]), 1e-9)
        # L-shape fit: for each orientation (over a quarter turn), how close the contacts lie
        # to the two edges facing the camera. ORIENTATIONS holds the e1 axes, then their e2
        # (e1 turned a quarter): contact coordinates c [N, 2 O], distances d to the
        # camera-facing edge along each axis
        c = (points - centre[owner]) @ ORIENTATIONS.T
        facing = view @ ORIENTATIONS.T                        # [S, 2 O]
        d = np.abs(c - np.where(facing > 0, np.minimum.reduceat(c, starts),
                                np.maximum.reduceat(c, starts))[owner])
        o = len(ORIENTATIONS) // 2
        score = np.add.reduceat(1.0 / np.maximum(np.minimum(d[:, :o], d[:, o:]), CLOSE),
                                starts)                       # [S, O]
        # candidates: orientations that fit nearly as well as the best, with either side
        # along e1; their camera-facing sides pass through their face contacts (their
        # segment's contacts near one of the two edges)
        seg, k = np.nonzero(score >= CANDIDATE_SCORE * score.max(1, keepdims=True))
        length = counts[seg]
        first = np.cumsum(length) - length
        candidate = np.repeat(np.arange(len(seg)), length)
        # flat index of each candidate's contacts at its e1 column, +o: its e2 column
        at = ((np.arange(len(candidate)) + (starts[seg] - first)[candidate]) * (2 * o) +
              k[candidate])[:, None] + (0, o)                 # [rows, 2]
        along = np.take(c, at)
        on_face = (np.take(d, at) <= FACE_TOL).any(1)[:, None]
        lo = np.minimum.reduceat(np.where(on_face, along, np.inf), first)[:, None]
        hi = np.maximum.reduceat(np.where(on_face, along, -np.inf), first)[:, None]
        toward = np.take(facing, (seg * (2 * o) + k)[:, None] + (0, o))[:, None]  # [P, 1, 2]
        size = prior[seg][:, None, :2]                        # [P, 1, 2] (length, width)
        size = np.concatenate([size, size[..., ::-1]], 1)     # [P, assignment, 2]
        # a side whose direction is near the viewing direction has its far end unseen;
        # a side seen across the view grows both ways to the prior's size
        grow = np.maximum(0.0, size - (hi - lo)) / 2
        unseen = np.abs(toward) > SIDE_COS
        low = np.where(unseen, np.where(toward > 0, lo, hi - size), lo - grow)
        high = np.where(unseen, np.where(toward > 0, lo + size, hi), hi + grow)
        # corners [P, assignment, 4, 2]: (low, low), (high, low), (high, high), (low, high)
        # in (e1, e2)
        bounds = np.concatenate([low, high], -1)              # [P, A, 4]: low1 low2 high1 high2
        u = bounds[..., (0, 2, 2, 0)][..., None]
        v = bounds[..., (1, 1, 3, 3)][..., None]
        origin = centre[seg] - prior[seg, 2:3] * view[seg]    # moved by the contact offset
        corners = u * ORIENTATIONS[k][:, None, None] + v * ORIENTATIONS[k + o][:, None, None] + \
            origin[:, None, None]
        # the silhouette test: the bearings of the rectangle's extreme corners against the
        # silhouette's sides (a side that only bounds: a one-sided cost), and the top row
        # of a box of the prior's height against the silhouette's top (within the scan's row
        # step; one at the image's top only bounds it); unknown silhouettes (NaN): no cost
        rel = corners - cam
        bearing = (np.arctan2(rel[..., 1], rel[..., 0]) - self.heading + math.pi) % \
            (2 * math.pi) - math.pi
        sil = silhouette[seg][:, None]                        # [P, 1, 5]
        below = bearing.min(-1) - sil[..., 0]
        above = sil[..., 1] - bearing.max(-1)
        cost = np.where(sil[..., 2] > 0, np.maximum(below, 0.0), np.abs(below)) + \
            np.where(sil[..., 3] > 0, np.maximum(above, 0.0), np.abs(above))
        top = self._top_row(rel, prior[seg, 3]) - sil[..., 4]
        miss = np.maximum(np.where(sil[..., 4] > 0, np.abs(top), top) - SILHOUETTE_ROW_STEP, 0.0)
        # (fmax turns NaN to 0)
        cost = np.fmax(cost, 0.0) + np.fmax(miss, 0.0) * (
            self.config.top_weight / self.K[1, 1] * (prior[seg, 3:4] > 0))
        # per segment the best silhouette match; ties go to the better fit of the contacts
        order = np.lexsort((np.repeat(-score[seg, k], 2), cost.ravel(), np.repeat(seg, 2)))
        best = order[np.searchsorted(np.repeat(seg, 2)[order], np.arange(count))]
        return corners.reshape(-1, 4, 2)[best]

    def _top_row(self, rel, height):
        """Highest image row (smallest v) of the tops of boxes on rectangles (corners
        relative to the camera [P, A, 4, 2]) with heights [P]; NaN where a corner lies
        behind the camera."""
        R, t = self.T[:3, :3], self.T[:3, 3]
        up = (height - t[2])[:, None, None, None]
        optical = rel[..., :1] * R[0] + rel[..., 1:] * R[1] + up * R[2]      # [P, A, 4, 3]
        depth = optical[..., 2]
        if self.distorted:
            uv, _ = cv2.projectPoints(optical.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      self.K, self.D)
            v = uv[:, 0, 1].reshape(depth.shape)
        else:
            v = self.K[1, 1] * optical[..., 1] / np.maximum(depth, 1e-3) + self.K[1, 2]
        return np.where(depth > 1e-3, v, np.nan).min(-1)

    def _band(self, points, columns, is_thing):
        """Cells (flat indices) and ground position of an obstacle without a prior:
        `obstacle_depth` behind its contacts. A thing's shape is unknown: along the camera
        rays from its contacts within `max_footprint` of its nearest one, filled to the
        convex hull; its position is their mean. Stuff (walls) is planar: perpendicular to
        the face seen between neighbouring contacts, at most GRAZING times that along a ray
        (contacts farther than that behind their neighbours are ground seen past the face's
        end)."""
        cfg, g = self.config, self.grid
        ray = points - self.camera_xy
        rng = np.linalg.norm(ray, axis=1)
        ray /= rng[:, None]
        if is_thing:
            keep = rng <= rng.min() + cfg.max_footprint
            points, ray = points[keep], ray[keep]
            along = np.full(len(points), cfg.obstacle_depth)
        else:
            # only contacts whose band can reach the grid
            g_reach = cfg.obstacle_depth * GRAZING
            near = (points[:, 0] > g.origin_x - g_reach) & \
                (points[:, 0] < g.origin_x + g.width * g.resolution + g_reach) & \
                (points[:, 1] > g.origin_y - g_reach) & \
                (points[:, 1] < g.origin_y + g.height * g.resolution + g_reach)
            if not near.any():
                return np.zeros(0, np.int64), None
            order = np.argsort(columns[near], kind='stable')
            points, ray, rng = points[near][order], ray[near][order], rng[near][order]
            # a contact farther behind its neighbours than a band reaches is ground seen
            # past the end of the face
            local = rng.copy()
            for shift in range(1, FACE_WINDOW + 1):
                local[shift:] = np.minimum(local[shift:], rng[:-shift])
                local[:-shift] = np.minimum(local[:-shift], rng[shift:])
            keep = rng <= local + g_reach
            points, ray = points[keep], ray[keep]
            if len(points) > 2 * FACE_WINDOW + 1:     # about two contacts a cell of the face
                spacing = np.abs(np.diff(points, axis=0)).sum(1).mean()
                stride = max(1, int(g.resolution / 2 / max(spacing, 1e-6)))
                points, ray = points[::stride], ray[::stride]
            n = len(points)
            index = np.arange(n)
            tangent = points[np.minimum(index + FACE_WINDOW, n - 1)] - \
                points[np.maximum(index - FACE_WINDOW, 0)]
            norm = np.linalg.norm(tangent, axis=1)
            # |cos| of the angle between the ray and the face's normal
            cos = np.where(norm > 1e-9, np.abs(tangent[:, 0] * ray[:, 1] - tangent[:, 1] *
                                               ray[:, 0]) / np.maximum(norm, 1e-9), 1.0)
            along = cfg.obstacle_depth / np.maximum(cos, 1.0 / GRAZING)
        steps = np.arange(0.0, along.max() + g.resolution / 2, g.resolution / 2)
        steps = np.minimum(steps[None, :], along[:, None])           # [n, steps], metres
        band = points[:, None, :] + steps[:, :, None] * ray[:, None, :]
        cells = self._cells_of(band.reshape(-1, 2))
        cells = cells[cells >= 0]
        if is_thing and self.config.fill_things:
            hull = cv2.convexHull(self._grid_points(band.reshape(-1, 2)))[:, 0]
            cells = np.concatenate([cells, self._polygon_cells(hull)])
        return cells, points.mean(0)

    def _polygon_cells(self, fixed):
        """Flat indices of the cells whose centres a convex polygon covers (corners [k, 2]
        as _grid_points gives them)."""
        g = self.grid
        lo = np.maximum(fixed.min(0) >> SUBPIXEL_BITS, 0)
        hi = np.minimum((fixed.max(0) >> SUBPIXEL_BITS) + 2, (g.width, g.height))
        if (hi <= lo).any():
            return np.zeros(0, np.int64)
        mask = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
        cv2.fillConvexPoly(mask, fixed - (lo << SUBPIXEL_BITS).astype(np.int32), 1,
                           shift=SUBPIXEL_BITS)
        i, j = np.nonzero(mask)
        return (i + lo[1]) * g.width + j + lo[0]

    def _grid_points(self, xy):
        """Points [n, 2] as fixed-point OpenCV coordinates of the grid (cell centres at
        integers)."""
        g = self.grid
        grid_xy = (xy - (g.origin_x, g.origin_y)) / g.resolution - 0.5
        grid_xy = np.clip(grid_xy, -4 * max(g.width, g.height), 4 * max(g.width, g.height))
        return np.round(grid_xy * (1 << SUBPIXEL_BITS)).astype(np.int32)

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
        panoptic = np.ascontiguousarray(panoptic)
        ids_flat = panoptic.ravel()
        # 1. cells by the class seen at their pixel
        out = np.full(g.height * g.width, UNKNOWN, np.int8)
        seen_ids = np.take(ids_flat, self.view_pixels)
        out[self.view_cells] = np.take(self.id_value, seen_ids, mode='clip')
        # 2. obstacles at their footprints, in the cells they hide themselves
        columns, points, ids = self._contacts(ids_flat, panoptic.shape[1])
        instances = {}
        if not len(ids):
            return out.reshape(g.height, g.width), instances
        hides = np.full(g.height * g.width, -1, seen_ids.dtype)  # segment seen at each cell
        hides[self.view_cells] = seen_ids
        starts = np.flatnonzero(np.diff(ids, prepend=-1))         # ids are sorted
        keys, ends = ids[starts], np.append(starts[1:], len(ids))
        # things with a footprint prior (and two contacts at least): rectangles
        counts = ends - starts
        category = np.minimum(keys // divisor, len(self.role) - 1)
        completes = (keys % divisor != 0) & self._has_prior[category] & (counts >= 2) & \
            (keys < len(self.id_role))
        completed = keys[completes]
        rectangles = np.zeros((0, 4, 2))
        if len(completed):
            rectangles = self._rectangles(
                points[np.repeat(completes, counts)],
                np.repeat(np.arange(len(completed)), counts[completes]), category[completes],
                self._silhouettes(panoptic, completed))
        completed = completed.tolist()
        occupied = []                   # cells, those that show their obstacle occupied
        fixed = self._grid_points(rectangles.reshape(-1, 2)).reshape(-1, 4, 2)
        on_grid = ((fixed.max(1) >= 0) & (fixed.min(1) < (np.array([g.width, g.height]) <<
                                                          SUBPIXEL_BITS))).all(1)
        for key, corners in zip(np.asarray(completed)[on_grid].tolist(), fixed[on_grid]):
            cells = self._polygon_cells(corners)
            occupied.append(cells[hides[cells] == key])
        instances.update(zip(completed, map(tuple, rectangles.mean(1).tolist())))
        for key, a, b in zip(keys.tolist(), starts, ends):
            if key in instances:
                continue
            cells, position = self._band(points[a:b], columns[a:b], key % divisor != 0)
            occupied.append(cells[hides[cells] == key])
            if key % divisor:
                instances[key] = (float(position[0]), float(position[1]))
        if occupied:
            out[np.concatenate(occupied)] = OCCUPIED
        return out.reshape(g.height, g.width), instances
