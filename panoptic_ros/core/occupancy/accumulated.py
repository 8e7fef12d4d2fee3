"""Occupancy that remembers: a rolling grid in the odometry frame around the robot, updated
from each camera grid with log-odds evidence and a decay of old observations.

Per cell: L, the log-odds that an obstacle stands there, and the ground cost last seen there.
An update with a camera grid (base frame) at the robot's pose (x, y, yaw in the odometry
frame, at the image stamp):

1. the map is re-centred on the robot (whole-cell shifts; cells that enter are unknown);
2. every cell decays towards "no knowledge", L <- L exp(-dt / tau), dt the time since the
   last update; tau is chosen so that a cell at full confidence (L = clamp) that nobody
   sees again falls below the occupied threshold after `memory` seconds:
   tau = memory / ln(clamp / logit(occupied)). A parked car that leaves the view so stays on
   the map for `memory` seconds; a car that drives away while in view is cleared at once by
   the free evidence of the ground it uncovers;
3. each map cell whose centre falls in a known cell of the camera grid adds evidence:
   `hit` (logit of P(occupied | seen occupied)) for occupied, `miss` (negative) for free or
   ground cost, and remembers that cell's ground cost; L stays within [-clamp, clamp].

Published values: never seen or back to uncertain (logit(free) < L < logit(occupied)) -> -1,
L >= logit(occupied) -> 100, L <= logit(free) -> the ground cost last seen there (0 on road).
Evidence sums over cameras and frames, so cells several cameras see are fused by the same
rule as cells seen repeatedly. No ROS here: the node supplies poses (PoseHistory).
"""

from dataclasses import dataclass
import math

import numpy as np

from panoptic_ros.core.occupancy.grid import OCCUPIED, UNKNOWN


def _logit(p):
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class MapConfig:
    """Geometry and evidence model of the accumulated map (metres, seconds, probabilities)."""
    resolution: float = 0.1
    width: int = 400
    height: int = 400
    frame_id: str = 'odom'
    memory: float = 30.0          # full-confidence obstacle unseen -> below occupied after this
    hit: float = 0.7              # P(occupied | the camera grid says occupied)
    miss: float = 0.4             # P(occupied | the camera grid says free / ground cost)
    clamp: float = 0.97           # confidence bound (keeps the map able to change)
    occupied: float = 0.65        # published occupied at or above this probability
    free: float = 0.35            # published free (its ground cost) at or below this

    def __post_init__(self):
        if self.resolution <= 0 or self.width < 1 or self.height < 1 or self.memory <= 0:
            raise ValueError('map resolution and memory must be > 0, width and height >= 1')
        if not 0.5 < self.occupied < self.clamp < 1 or not 0 < self.free < 0.5 or \
                not 0.5 < self.hit < 1 or not 0 < self.miss < 0.5:
            raise ValueError('map probabilities need 0 < free, miss < 0.5 < hit, occupied < '
                             'clamp < 1')

    @property
    def tau(self):
        """Decay time constant (s): an unseen cell at the clamp reaches the occupied
        threshold after `memory` seconds."""
        return self.memory / math.log(_logit(self.clamp) / _logit(self.occupied))


class AccumulatedMap:
    """The rolling log-odds grid; see the module docstring. origin: (x, y) of cell (0, 0)'s
    lower corner in the odometry frame, a multiple of the resolution."""

    def __init__(self, config=MapConfig()):
        self.config = c = config
        self.logodds = np.zeros((c.height, c.width), np.float32)
        self.cost = np.zeros((c.height, c.width), np.int8)
        self.seen = np.zeros((c.height, c.width), bool)
        self.origin = None
        self.stamp = None
        self.limits = (_logit(c.hit), _logit(c.miss), _logit(c.clamp))

    def recentre(self, x, y):
        """Shift the map (whole cells) so that (x, y) is near its centre."""
        c = self.config
        origin = (math.floor(x / c.resolution) - c.width // 2,
                  math.floor(y / c.resolution) - c.height // 2)
        if self.origin is None:
            self.origin = origin
            return
        dj, di = origin[0] - self.origin[0], origin[1] - self.origin[1]
        if dj or di:
            for name in ('logodds', 'cost', 'seen'):
                setattr(self, name, _shifted(getattr(self, name), di, dj))
            self.origin = origin

    @property
    def origin_xy(self):
        return (self.origin[0] * self.config.resolution, self.origin[1] * self.config.resolution)

    def decay(self, stamp):
        """Fade every cell for the time since the last update (never backwards)."""
        if self.stamp is not None and stamp > self.stamp:
            self.logodds *= math.exp(-(stamp - self.stamp) / self.config.tau)
        if self.stamp is None or stamp > self.stamp:
            self.stamp = stamp

    def update(self, grid_values, grid, pose, stamp):
        """Add one camera grid: grid_values int8 [grid.height, grid.width] in the base frame
        (GridConfig `grid`), the robot's pose (x, y, yaw) in the odometry frame at the
        image stamp (seconds)."""
        c = self.config
        x, y, yaw = pose
        self.recentre(x, y)
        self.decay(stamp)
        # map cell centres -> base frame -> camera grid cell
        ox, oy = self.origin_xy
        mx = ox + (np.arange(c.width) + 0.5) * c.resolution - x
        my = oy + (np.arange(c.height) + 0.5) * c.resolution - y
        cos, sin = math.cos(yaw), math.sin(yaw)
        bx = cos * mx[None, :] + sin * my[:, None]
        by = -sin * mx[None, :] + cos * my[:, None]
        j = np.floor((bx - grid.origin_x) / grid.resolution).astype(np.int64)
        i = np.floor((by - grid.origin_y) / grid.resolution).astype(np.int64)
        inside = (j >= 0) & (j < grid.width) & (i >= 0) & (i < grid.height)
        values = np.full(inside.shape, UNKNOWN, np.int8)
        values[inside] = grid_values[i[inside], j[inside]]
        hit, miss, clamp = self.limits
        occupied, ground = values == OCCUPIED, (values >= 0) & (values < OCCUPIED)
        self.logodds[occupied] += hit
        self.logodds[ground] += miss
        np.clip(self.logodds, -clamp, clamp, out=self.logodds)
        self.cost[ground] = values[ground]
        self.seen |= occupied | ground

    def values(self):
        """int8 [height, width] for nav_msgs/OccupancyGrid (see the module docstring)."""
        c = self.config
        out = np.full(self.logodds.shape, UNKNOWN, np.int8)
        free = self.seen & (self.logodds <= _logit(c.free))
        out[free] = self.cost[free]
        out[self.seen & (self.logodds >= _logit(c.occupied))] = OCCUPIED
        return out


def _shifted(array, di, dj):
    """array moved by (-di, -dj) cells (the map's origin moved by (di, dj)); cells that enter
    are zero."""
    out = np.zeros_like(array)
    h, w = array.shape
    if abs(di) >= h or abs(dj) >= w:
        return out
    src_i, dst_i = (slice(di, h), slice(0, h - di)) if di >= 0 else \
        (slice(0, h + di), slice(-di, h))
    src_j, dst_j = (slice(dj, w), slice(0, w - dj)) if dj >= 0 else \
        (slice(0, w + dj), slice(-dj, w))
    out[dst_i, dst_j] = array[src_i, src_j]
    return out


class PoseHistory:
    """The robot's recent poses (stamp seconds, x, y, yaw) in the odometry frame, from
    nav_msgs/Odometry or tf; `at(stamp)` interpolates between the two poses around the
    stamp. Raises LookupError when there is none (no pose yet, every pose older than the
    image by more than `tolerance`, or the image older than the oldest pose kept)."""

    def __init__(self, keep=10.0, tolerance=0.1):
        self.keep, self.tolerance = keep, tolerance
        self.poses = []   # (stamp, x, y, yaw), sorted by stamp

    def add(self, stamp, x, y, yaw):
        if self.poses and stamp < self.poses[-1][0]:   # out of order: keep the order
            self.poses = [p for p in self.poses if p[0] < stamp]
        self.poses.append((stamp, x, y, yaw))
        while self.poses and self.poses[0][0] < stamp - self.keep:
            self.poses.pop(0)

    def at(self, stamp):
        if not self.poses:
            raise LookupError('no odometry received yet')
        newest, oldest = self.poses[-1], self.poses[0]
        if stamp > newest[0]:
            if stamp - newest[0] > self.tolerance:
                raise LookupError(f'the newest pose is {stamp - newest[0]:.3f} s older than '
                                  'the image')
            return newest[1:]
        if stamp < oldest[0]:
            raise LookupError(f'the image is {oldest[0] - stamp:.3f} s older than the oldest '
                              'pose kept')
        stamps = [p[0] for p in self.poses]
        k = int(np.searchsorted(stamps, stamp))
        if stamps[k] == stamp:
            return self.poses[k][1:]
        (t0, x0, y0, a0), (t1, x1, y1, a1) = self.poses[k - 1], self.poses[k]
        f = (stamp - t0) / (t1 - t0)
        turn = math.remainder(a1 - a0, math.tau)
        return (x0 + f * (x1 - x0), y0 + f * (y1 - y0),
                math.remainder(a0 + f * turn, math.tau))
