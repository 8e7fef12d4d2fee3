"""Occupancy, footprint completion: how far an obstacle reaches behind its visible ground
contacts, which a monocular camera does not see (see panoptic_ros.core.occupancy).

- `rectangles`: things with a footprint prior, an L-shape fit of the prior's rectangle to
  the contacts, the orientation chosen by the segment's silhouette (`silhouettes`).
- `band`: other obstacles, `obstacle_depth` behind the contacts.
"""

import math

import cv2
import numpy as np

from panoptic_ros.core.occupancy.grid import ROLE_OBSTACLE
from panoptic_ros.core.occupancy.ground import SILHOUETTE_ROW_STEP

# Contacts within FACE_TOL metres of a camera-facing edge are on that face; CLOSE (m) caps a
# contact's closeness weight in the L-shape fit, over orientations every 3 degrees;
# orientations within CANDIDATE_SCORE of the best fit are candidates for the silhouette
# test; a side whose direction is within acos(SIDE_COS) of the viewing direction has its
# far end unseen. The silhouette test adds the bearing mismatches (rad) of the two sides
# and, top_weight times (OccupancyConfig), the top row's (rows / fy, beyond
# SILHOUETTE_ROW_STEP rows, the rows scanned). A wall's face direction is taken over
# FACE_WINDOW contacts either side, and a wall seen at a grazing angle is marked at most
# GRAZING times its depth along the ray.
FACE_TOL, CLOSE, CANDIDATE_SCORE, SIDE_COS = 0.1, 0.02, 0.9, 0.5
FACE_WINDOW, GRAZING = 3, 8
_THETA = np.radians(np.arange(0.0, 180.0, 3.0))      # e1 of 30 orientations, then their e2
ORIENTATIONS = np.stack([np.cos(_THETA), np.sin(_THETA)], 1)


def silhouettes(view, id_role, panoptic, wanted):
    """[S, 5] of the wanted segment ids [S]: the extreme bearings (azimuth from the
    camera's heading in the base frame) of their pixels, found at the horizontal label
    changes and the image borders, whether each only bounds the body's (1: its outer
    neighbour is the image border or another obstacle, which may cut the body off), and
    the silhouette's top row; NaN for a segment not found (the rows are scanned every
    SILHOUETTE_ROW_STEP)."""
    rows = np.ascontiguousarray(panoptic[::SILHOUETTE_ROW_STEP])   # sides are steep
    height, width = rows.shape
    flat, bearings = rows.ravel(), view.row_bearing.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1])
    change = change[(change + 1) % width != 0]          # not from one row to the next
    # boundary pixels: both sides of each change, then the left and right image borders
    pixel = np.concatenate([change, change + 1, np.arange(0, flat.size, width),
                            np.arange(width - 1, flat.size, width)])
    outer = np.concatenate([flat[change + 1], flat[change], np.full(2 * height, -1)])
    index_of = np.full(len(id_role), -1, np.int64)      # segment id -> index in wanted
    index_of[wanted] = np.arange(len(wanted))
    which = np.take(index_of, flat[pixel], mode='clip')
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
    cut = (outer < 0) | (np.take(id_role, outer, mode='clip') == ROLE_OBSTACLE)
    found = which[starts]
    result[found] = np.stack([bearing[starts], bearing[ends], cut[starts], cut[ends],
                              np.minimum.reduceat(pixel // width, starts) *
                              SILHOUETTE_ROW_STEP], 1)
    return result


def rectangles(view, prior_of, top_weight, points, owner, category, silhouette):
    """Footprint rectangles (corners [S, 4, 2], counter-clockwise) of S things at once
    (module docstring, step 2) from their contact points [N, 2], sorted by owner [N]
    (0..S-1), with their categories [S] (which have footprint priors) and silhouettes
    [S, 5] (silhouettes)."""
    prior = prior_of[category]        # [S]: length, width (scaled), offset, height
    cam = view.camera_xy
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
    viewing = centre - cam                                   # viewing direction [S, 2]
    viewing /= np.maximum(np.hypot(viewing[:, :1], viewing[:, 1:]), 1e-9)
    # L-shape fit: for each orientation (over a quarter turn), how close the contacts lie
    # to the two edges facing the camera. ORIENTATIONS holds the e1 axes, then their e2
    # (e1 turned a quarter): contact coordinates c [N, 2 O], distances d to the
    # camera-facing edge along each axis
    c = (points - centre[owner]) @ ORIENTATIONS.T
    facing = viewing @ ORIENTATIONS.T                        # [S, 2 O]
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
    origin = centre[seg] - prior[seg, 2:3] * viewing[seg]    # moved by the contact offset
    corners = u * ORIENTATIONS[k][:, None, None] + v * ORIENTATIONS[k + o][:, None, None] + \
        origin[:, None, None]
    # the silhouette test: the bearings of the rectangle's extreme corners against the
    # silhouette's sides (a side that only bounds: a one-sided cost), and the top row
    # of a box of the prior's height against the silhouette's top (within the scan's row
    # step; one at the image's top only bounds it); unknown silhouettes (NaN): no cost
    rel = corners - cam
    bearing = (np.arctan2(rel[..., 1], rel[..., 0]) - view.heading + math.pi) % \
        (2 * math.pi) - math.pi
    sil = silhouette[seg][:, None]                        # [P, 1, 5]
    below = bearing.min(-1) - sil[..., 0]
    above = sil[..., 1] - bearing.max(-1)
    cost = np.where(sil[..., 2] > 0, np.maximum(below, 0.0), np.abs(below)) + \
        np.where(sil[..., 3] > 0, np.maximum(above, 0.0), np.abs(above))
    top = view.top_row(rel, prior[seg, 3]) - sil[..., 4]
    miss = np.maximum(np.where(sil[..., 4] > 0, np.abs(top), top) - SILHOUETTE_ROW_STEP, 0.0)
    # (fmax turns NaN to 0)
    cost = np.fmax(cost, 0.0) + np.fmax(miss, 0.0) * (
        top_weight / view.camera.fy * (prior[seg, 3:4] > 0))
    # per segment the best silhouette match; ties go to the better fit of the contacts
    order = np.lexsort((np.repeat(-score[seg, k], 2), cost.ravel(), np.repeat(seg, 2)))
    best = order[np.searchsorted(np.repeat(seg, 2)[order], np.arange(count))]
    return corners.reshape(-1, 4, 2)[best]


def band(view, config, grid, points, columns, is_thing):
    """Cells (flat indices) and ground position of an obstacle without a prior:
    `obstacle_depth` behind its contacts. A thing's shape is unknown: along the camera
    rays from its contacts within `max_footprint` of its nearest one, filled to the
    convex hull; its position is their mean. Stuff (walls) is planar: perpendicular to
    the face seen between neighbouring contacts, at most GRAZING times that along a ray
    (contacts farther than that behind their neighbours are ground seen past the face's
    end)."""
    cfg, g = config, grid
    ray = points - view.camera_xy
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
    cells = g.cells_of(band.reshape(-1, 2))
    cells = cells[cells >= 0]
    if is_thing and cfg.fill_things:
        hull = cv2.convexHull(g.fixed_points(band.reshape(-1, 2)))[:, 0]
        cells = np.concatenate([cells, g.polygon_cells(hull)])
    return cells, points.mean(0)
