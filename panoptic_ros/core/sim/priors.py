"""Footprint priors of the simulated thing classes, measured on rendered frames: the
calibration of the occupancy projection's rectangle completion (occupancy.FootprintPrior).

For each thing class, over the frames given:
- length, width: the medians of the long and short sides of its footprint rectangles (the
  ground truth's polygons, occupancy_gt.py);
- contact_offset: the median, over things with visible contacts, of how far the nearest
  contact (OccupancyProjector.contacts on the ground-truth labels) lies behind the
  footprint's front edge along the camera ray through it (a rounded body hides the ground
  under its front: its visible contact lies inside its footprint);
- height: the median height of its highest rendered point (back-projected through the depth
  image) over things seen whole (the silhouette's top, against which the rectangle's box is
  tested);
and of walls (the stuff obstacle), the median short side: their thickness, the projection's
obstacle_depth.

`calibration_sweep` scores the projection with these priors over footprint_scale and
top_weight (mean occupied IoU against the ground truth): the best pair is
config/panoptic.yaml's footprint_scale and OccupancyConfig's top_weight.
`panoptic-ros-sim footprint-priors` prints both, on calibration seeds apart from the
benchmark's and the tests'.
"""

import numpy as np

from panoptic_ros.core.metrics import occupancy_scores
from panoptic_ros.core.occupancy import (FootprintPrior, GridConfig, OccupancyConfig,
                                         OccupancyProjector)
from panoptic_ros.core.sim.occupancy_gt import inside_convex_polygon
from panoptic_ros.core.sim.taxonomy import BY_NAME, CLASSES, LABEL_DIVISOR

# The simulator's class -> occupancy mapping (road free, grass cost, sky ignored, the rest
# obstacles), as config/panoptic.yaml sets it for the shipped model.
SIM_ROLES = {c.id: ('free' if c.ground == 'drivable' else 'cost') for c in CLASSES if c.ground}
SIM_ROLES[BY_NAME['sky'].id] = 'ignore'
CALIBRATION_SEEDS = range(1000, 1120)   # apart from the benchmark's (100-139) and tests'


def projector_for(frame, config):
    """OccupancyProjector of a rendered frame's camera and grid."""
    g = frame.grid
    return OccupancyProjector(frame.camera, frame.T_base_optical,
                              GridConfig(g.resolution, g.width, g.height, g.origin_x,
                                         g.origin_y), config)


def _sides(polygon):
    """(long, short) side of a footprint rectangle [4, 2]."""
    a, b = np.linalg.norm(polygon[1] - polygon[0]), np.linalg.norm(polygon[2] - polygon[1])
    return max(a, b), min(a, b)


def _front_offset(contacts, camera_xy, polygon):
    """How far the nearest contact lies behind the polygon's front edge along its ray (NaN
    when the ray misses the polygon)."""
    rng = np.hypot(*(contacts - camera_xy).T)
    nearest = contacts[np.argmin(rng)]
    direction = (nearest - camera_xy) / rng.min()
    t = np.arange(0.0, rng.min() + 5.0, 0.005)
    line = camera_xy + t[:, None] * direction
    inside = inside_convex_polygon(line[:, 0], line[:, 1], polygon)
    return rng.min() - t[inside].min() if inside.any() else np.nan


def _visible_tops(frame):
    """{thing id: height of its highest rendered point} of the things whose silhouette lies
    inside the image (back-projected through the depth image)."""
    tops = {}
    height, width = frame.panoptic.shape
    for segment in frame.segments:
        x, y, w, h = segment['bbox']
        if not segment['is_thing'] or x == 0 or y == 0 or x + w == width or y + h == height:
            continue
        v, u = np.nonzero(frame.panoptic == segment['id'])
        rays = frame.camera.rays(np.stack([u, v], 1))
        points = (rays * frame.depth[v, u][:, None]) @ frame.T_base_optical[:3, :3].T + \
            frame.T_base_optical[:3, 3]
        tops[segment['id']] = float(points[:, 2].max())
    return tops


def measure_footprint_priors(frames):
    """({category id: FootprintPrior} of the thing classes, wall thickness in metres)."""
    sides, offsets, heights, walls = {}, {}, {}, []
    for frame in frames:
        projector = projector_for(frame, OccupancyConfig(roles=SIM_ROLES))
        _, points, ids = projector.contacts(frame.panoptic)
        tops = _visible_tops(frame)
        for pid, polygon in frame.footprints:
            polygon = np.asarray(polygon)
            if pid % LABEL_DIVISOR == 0:
                walls.append(_sides(polygon)[1])
                continue
            category = pid // LABEL_DIVISOR
            sides.setdefault(category, []).append(_sides(polygon))
            if pid in tops:
                heights.setdefault(category, []).append(tops[pid])
            own = points[ids == pid]
            if len(own) >= 3:
                offset = _front_offset(own, projector.view.camera_xy, polygon)
                if np.isfinite(offset):
                    offsets.setdefault(category, []).append(offset)
    priors = {}
    for category, values in sorted(sides.items()):
        length, width = np.median(values, 0)
        offset = float(np.clip(np.median(offsets.get(category, [0.0])), 0.0, width))
        height = float(np.median(heights.get(category, [0.0])))
        priors[category] = FootprintPrior(round(float(length), 2), round(float(width), 2),
                                          round(offset, 2), round(height, 2))
    return priors, round(float(np.median(walls)), 2) if walls else None


def calibration_sweep(frames, priors, obstacle_depth, scales=(0.85, 0.9, 0.95, 1.0),
                      top_weights=(1.0, 2.0, 4.0)):
    """{(footprint_scale, top_weight): mean occupied IoU} of the projection with these
    priors, ground-truth labels in."""
    result = {}
    for scale in scales:
        for weight in top_weights:
            config = OccupancyConfig(roles=SIM_ROLES, footprints=priors,
                                     footprint_scale=scale, top_weight=weight,
                                     obstacle_depth=obstacle_depth)
            ious = [occupancy_scores(projector_for(f, config)(f.panoptic)[0],
                                     f.occupancy)['occupied_iou'] for f in frames]
            result[scale, weight] = float(np.nanmean(ious))
    return result
