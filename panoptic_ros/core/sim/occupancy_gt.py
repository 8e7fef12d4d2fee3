"""Ground-truth occupancy grid of a rendered frame: the reference the occupancy
projection is scored against.

Grid: nav_msgs/OccupancyGrid layout in the base frame (x forward, y left, ground z = 0):
``grid[i, j]`` is the cell whose lower corner is ``origin + (j, i) * resolution``; its
centre is ``origin + (j + 0.5, i + 0.5) * resolution``.

Definition. Every cell is judged at its centre g = (x, y, 0) by the first surface that the
camera ray to g meets, as the camera renders it: the rendered label at the pixel g projects
to (the pixel's centre ray passes within half a pixel of g's):

- UNKNOWN (-1) if g is behind the camera (depth <= near) or projects outside the image.
- If g lies in the ground footprint of an obstacle (a thing, or a wall: the rectangle of its
  collision box on the ground, rotated by its yaw): OCCUPIED (100) when the pixel shows that
  obstacle (the obstacle stands between the camera and g, hiding g), else UNKNOWN (the
  camera sees another object there, or the ground under a raised part of the obstacle).
- Otherwise, when the pixel shows ground: FREE (0) for drivable ground (road), NON_DRIVABLE
  (50) for other ground (grass); when it shows anything else: UNKNOWN (the cell is hidden).

So cells behind an obstacle along the camera ray are unknown, cells never in view are
unknown, and an obstacle is occupied over its whole footprint where it is the visible
surface. Values are int8.

Visibility is the render's, not pybullet's ray tests: the collision shapes of the racecar and
the husky are simplified boxes and the table's is only its top, so ray tests disagreed with
the images (cells hidden behind a rendered car body or table leg read as not hidden, ground
seen under a husky's chassis as hidden), and no projection of the rendered labels could
reproduce them.
"""

import cv2
import numpy as np

from panoptic_ros.core.occupancy import GridConfig
from panoptic_ros.core.sim.taxonomy import CLASSES, LABEL_DIVISOR

UNKNOWN, FREE, NON_DRIVABLE, OCCUPIED = -1, 0, 50, 100


# The grid geometry is the occupancy projection's (one definition for both).
GridSpec = GridConfig


def write_grid_png(path, grid):
    """Write occupancy values (-1..100) as a uint8 PNG of value + 1 (0 = unknown)."""
    cv2.imwrite(str(path), (np.asarray(grid, np.int16) + 1).astype(np.uint8))


def read_grid_png(path):
    """Occupancy values int16 [ny, nx] of a PNG written by write_grid_png."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f'cannot read occupancy PNG {path}')
    return image.astype(np.int16) - 1


def inside_convex_polygon(x, y, polygon):
    """Boolean mask of points (x, y) inside (or on) a convex polygon [k, 2] (any winding)."""
    sides = []
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        sides.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    sides = np.stack(sides)
    return (sides >= -1e-9).all(0) | (sides <= 1e-9).all(0)


def classify_cells(seen, in_view, in_footprint_of, grid=GridSpec()):
    """Apply the definition above to per-cell view results.

    Args:
        seen: int [n] panoptic id the camera sees at each cell's pixel (0: none).
        in_view: bool [n], the cell centre projects into the image in front of the camera.
        in_footprint_of: int [n], panoptic id of the obstacle whose footprint holds the cell
            centre, 0 if none.
    Returns:
        int8 [grid.height, grid.width].
    """
    result = np.full(seen.shape, UNKNOWN, np.int8)
    seen_category = seen // LABEL_DIVISOR
    open_ground = in_view & (in_footprint_of == 0)
    for cls in CLASSES:
        if cls.ground:
            result[open_ground & (seen_category == cls.id)] = \
                FREE if cls.ground == 'drivable' else NON_DRIVABLE
    result[in_view & (in_footprint_of != 0) & (seen == in_footprint_of)] = OCCUPIED
    return result.reshape(grid.height, grid.width)


def labels_at_cells(panoptic, grid, camera, T_base_optical, near=0.05):
    """Cell centres as points [n, 3] (base frame), whether each projects into the image in
    front of the camera (depth > near), and the label the image shows at its pixel (the
    nearest pixel centre; 0 where not in view)."""
    height, width = panoptic.shape
    x, y = grid.cell_centres()
    points = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    uv, depth = camera.project_from_base(points, T_base_optical)
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    in_view = (depth > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    seen = np.zeros(len(points), np.int64)
    seen[in_view] = panoptic[v[in_view].astype(np.int64), u[in_view].astype(np.int64)]
    return points, in_view, seen


def footprint_owner(points, footprints):
    """Panoptic id of the footprint holding each point [n, 3] (0: none; the last one listed
    wins where footprints overlap)."""
    owner = np.zeros(points.shape[0], np.int64)
    for panoptic_id, polygon in footprints:
        owner[inside_convex_polygon(points[:, 0], points[:, 1], np.asarray(polygon))] = \
            panoptic_id
    return owner
