"""Occupancy, several cameras: the grids of one moment's camera images (each projected with its
own intrinsics and extrinsics onto the same base-frame grid) fused into one.

Where one camera sees a cell, the fused cell is its value; where none does, it is unknown.
Where several see it, `FUSION_RULES` decide:

- `occupied_wins`: the highest value: occupied over any ground cost over free. A camera sees
  an obstacle's footprint only where the obstacle itself hides the ground (the projector
  marks nothing else), so another camera's "free" there is ground it saw past or under the
  obstacle's edge: the obstacle's evidence wins, as in a costmap's obstacle layer.
- `nearest_camera`: the value of the camera whose optical centre is nearest the cell: a
  nearer view has more pixels per cell and its ground projection errs less.

occupied_wins is the default: on an overlapping rig it scored higher with the network's
labels, nearest_camera with exact ones (benchmarks/bench_multicamera_grids.py;
docs/benchmarks.md, "Several cameras").
"""

import numpy as np

from panoptic_ros.core.occupancy.grid import UNKNOWN

FUSION_RULES = ('occupied_wins', 'nearest_camera')


def fuse(grids, rule='occupied_wins', camera_xy=None, grid=None):
    """One grid from several of the same GridConfig.

    grids: int8 [n, height, width] (or a list of n), -1 unknown, 0..100; rule: one of
    FUSION_RULES; camera_xy: [n, 2] optical centres in the base frame and grid: the
    GridConfig (both needed by nearest_camera). Returns int8 [height, width].
    """
    if rule not in FUSION_RULES:
        raise ValueError(f'fusion rule {rule!r} is not one of {FUSION_RULES}')
    grids = np.asarray(grids, np.int8)
    if grids.ndim != 3 or not len(grids):
        raise ValueError(f'expected grids [n, height, width], got shape {grids.shape}')
    if len(grids) == 1:
        return grids[0].copy()
    if rule == 'occupied_wins':
        return grids.max(0)   # unknown (-1) is below every known value
    if camera_xy is None or grid is None:
        raise ValueError('nearest_camera needs the cameras\' positions and the grid')
    x, y = grid.cell_centres()
    camera_xy = np.asarray(camera_xy, float)
    distance = np.hypot(x[None] - camera_xy[:, 0, None, None],
                        y[None] - camera_xy[:, 1, None, None])
    distance[grids == UNKNOWN] = np.inf
    nearest = distance.argmin(0)
    return np.take_along_axis(grids, nearest[None], 0)[0]
