"""Occupancy, the grid: cell values, class roles, the grid geometry and the configuration.

A grid is a nav_msgs/OccupancyGrid in the base frame (x forward, y left, ground z = 0):
``grid[i, j]`` is the cell whose lower corner is ``origin + (j, i) * resolution``.
"""

from dataclasses import dataclass, field
import math

import cv2
import numpy as np

# Cell values (nav_msgs/OccupancyGrid).
UNKNOWN, FREE, OCCUPIED = -1, 0, 100
# Role of each category in the class -> occupancy mapping.
ROLE_IGNORE, ROLE_FREE, ROLE_COST, ROLE_OBSTACLE = 0, 1, 2, 3
ROLES = {'ignore': ROLE_IGNORE, 'free': ROLE_FREE, 'cost': ROLE_COST,
         'obstacle': ROLE_OBSTACLE}
SUBPIXEL_BITS = 4          # fixed-point bits of the grid polygons filled with OpenCV


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

    def cells_of(self, xy):
        """Flat cell index of points [n, 2] (metres, base frame), -1 outside the grid."""
        j = np.floor((xy[:, 0] - self.origin_x) / self.resolution)
        i = np.floor((xy[:, 1] - self.origin_y) / self.resolution)
        ok = (j >= 0) & (j < self.width) & (i >= 0) & (i < self.height) & np.isfinite(j + i)
        return np.where(ok, i * self.width + j, -1).astype(np.int64)

    def fixed_points(self, xy):
        """Points [n, 2] (metres) as fixed-point OpenCV coordinates of the grid (cell centres
        at integers, SUBPIXEL_BITS fractional bits)."""
        grid_xy = (xy - (self.origin_x, self.origin_y)) / self.resolution - 0.5
        limit = 4 * max(self.width, self.height)
        grid_xy = np.clip(grid_xy, -limit, limit)
        return np.round(grid_xy * (1 << SUBPIXEL_BITS)).astype(np.int32)

    def polygon_cells(self, fixed):
        """Flat indices of the cells whose centres a convex polygon covers (corners [k, 2]
        as fixed_points gives them)."""
        lo = np.maximum(fixed.min(0) >> SUBPIXEL_BITS, 0)
        hi = np.minimum((fixed.max(0) >> SUBPIXEL_BITS) + 2, (self.width, self.height))
        if (hi <= lo).any():
            return np.zeros(0, np.int64)
        mask = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
        cv2.fillConvexPoly(mask, fixed - (lo << SUBPIXEL_BITS).astype(np.int32), 1,
                           shift=SUBPIXEL_BITS)
        i, j = np.nonzero(mask)
        return (i + lo[1]) * self.width + j + lo[0]


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
