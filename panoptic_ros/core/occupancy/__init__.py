"""Occupancy step: project panoptic labels onto the ground plane, obstacles only at their
footprint (after the panoptic head; before the messages).

Frames: labels are in the camera image (OpenCV pixels, CameraInfo K and distortion D); the
grid is a nav_msgs/OccupancyGrid in the base frame (x forward, y left, ground z = 0):
``grid[i, j]`` is the cell whose lower corner is ``origin + (j, i) * resolution``.
The camera is a camera_model.PinholeCamera; `T_base_optical` (4x4) places the camera
optical frame in the base frame (from tf2 at the image stamp, or from parameters).

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
per-pixel Python. The stages, one module each: `grid` (cell values, class roles, grid
geometry, configuration), `ground` (pixel rays on the ground, contacts), `footprints`
(completion behind the contacts), `projector` (the tables of one camera and the per-frame
call).
"""

from panoptic_ros.core.occupancy.grid import (
    FootprintPrior, FREE, GridConfig, OCCUPIED, OccupancyConfig, ROLES, UNKNOWN)
from panoptic_ros.core.occupancy.ground import (
    ground_to_pixels, GroundView, horizon_row, pixels_to_ground)
from panoptic_ros.core.occupancy.projector import OccupancyProjector

__all__ = ['FootprintPrior', 'FREE', 'GridConfig', 'ground_to_pixels', 'GroundView',
           'horizon_row', 'OCCUPIED', 'OccupancyConfig', 'OccupancyProjector',
           'pixels_to_ground', 'ROLES', 'UNKNOWN']
