"""Occupancy, the projector: label images of one camera at one pose onto one grid (see
panoptic_ros.core.occupancy for the method)."""

import math

import numpy as np

from panoptic_ros.core.occupancy import footprints
from panoptic_ros.core.occupancy.grid import (
    FREE, GridConfig, OCCUPIED, OccupancyConfig, ROLE_COST, ROLE_FREE, ROLE_IGNORE,
    ROLE_OBSTACLE, ROLES, SUBPIXEL_BITS, UNKNOWN)
from panoptic_ros.core.occupancy.ground import ground_to_pixels, GroundView, contacts


class OccupancyProjector:
    """Projects label images of one camera model at one pose onto one grid.

    camera: PinholeCamera of the label images (their size is camera.size); T_base_optical
    [4, 4]; grid: GridConfig; config: OccupancyConfig; num_categories: length of the class
    table (void included).
    """

    def __init__(self, camera, T_base_optical, grid=GridConfig(), config=OccupancyConfig(),
                 num_categories=256):
        self.camera = camera
        self.image_size = camera.size
        self.grid = grid
        self.config = config
        # ground point and bearing of every pixel (raises for a camera below the ground)
        self.view = GroundView(camera, T_base_optical)
        self.T = self.view.T
        height, width = self.image_size
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
        # pixel of every cell centre; cells out of view / out of range get pixel -1
        cx, cy = (c.ravel() for c in grid.cell_centres())
        uv, depth = ground_to_pixels(np.stack([cx, cy], 1), camera, self.T)
        uu, vv = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        camera_xy = self.view.camera_xy
        in_range = np.hypot(cx - camera_xy[0], cy - camera_xy[1]) <= config.max_range
        in_view = (depth > 1e-3) & (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height) & \
            in_range
        # distortion models fold far-off-image points back in: keep cells whose pixel
        # back-projects to (nearly) the cell itself
        flat = np.where(in_view, vv * width + uu, 0).astype(np.int64)
        back = self.view.ground[flat]
        in_view &= np.hypot(back[:, 0] - cx, back[:, 1] - cy) < \
            np.maximum(4 * grid.resolution, 0.1 * np.hypot(cx - camera_xy[0], cy - camera_xy[1]))
        # cells in view and their pixels, in pixel order (the per-frame gather from the label
        # image then reads memory in order)
        self.view_cells = np.nonzero(in_view)[0]
        self.view_pixels = flat[in_view]
        order = np.argsort(self.view_pixels, kind='stable')
        self.view_cells, self.view_pixels = self.view_cells[order], self.view_pixels[order]

    def contacts(self, panoptic):
        """(columns [n], ground points [n, 2], segment ids [n]) of a label image's contacts
        (see ground.contacts)."""
        panoptic = np.ascontiguousarray(panoptic)
        return contacts(self.view, self.id_role, panoptic.ravel(), panoptic.shape[1])

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
        columns, points, ids = contacts(self.view, self.id_role, ids_flat, panoptic.shape[1])
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
            rectangles = footprints.rectangles(
                self.view, self._prior_of, self.config.top_weight,
                points[np.repeat(completes, counts)],
                np.repeat(np.arange(len(completed)), counts[completes]), category[completes],
                footprints.silhouettes(self.view, self.id_role, panoptic, completed))
        completed = completed.tolist()
        occupied = []                   # cells, those that show their obstacle occupied
        fixed = g.fixed_points(rectangles.reshape(-1, 2)).reshape(-1, 4, 2)
        on_grid = ((fixed.max(1) >= 0) & (fixed.min(1) < (np.array([g.width, g.height]) <<
                                                          SUBPIXEL_BITS))).all(1)
        for key, corners in zip(np.asarray(completed)[on_grid].tolist(), fixed[on_grid]):
            cells = g.polygon_cells(corners)
            occupied.append(cells[hides[cells] == key])
        instances.update(zip(completed, map(tuple, rectangles.mean(1).tolist())))
        for key, a, b in zip(keys.tolist(), starts, ends):
            if key in instances:
                continue
            cells, position = footprints.band(self.view, self.config, g, points[a:b],
                                              columns[a:b], key % divisor != 0)
            occupied.append(cells[hides[cells] == key])
            if key % divisor:
                instances[key] = (float(position[0]), float(position[1]))
        if occupied:
            out[np.concatenate(occupied)] = OCCUPIED
        return out.reshape(g.height, g.width), instances
