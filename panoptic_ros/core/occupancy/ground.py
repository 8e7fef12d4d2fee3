"""Occupancy, the ground: where pixel rays meet the ground plane z = 0, and the ground
contacts of the obstacles in a label image (where an obstacle's lowest pixels meet ground).

Pixels are the camera's (OpenCV convention, see camera_model); points are in the base frame.
"""

import math

import numpy as np

from panoptic_ros.core.occupancy.grid import ROLE_COST, ROLE_FREE, ROLE_OBSTACLE

SILHOUETTE_ROW_STEP = 4    # rows of a label image scanned for silhouettes (sides are steep)


def ray_ground(rays, origin):
    """Where base-frame rays [n, 3] from origin meet z = 0 (x, y) [n, 2]; NaN for rays at or
    above the horizon."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -origin[2] / rays[:, 2]
    t[~(t > 0) | ~np.isfinite(t)] = np.nan
    return origin[:2] + rays[:, :2] * t[:, None]


def pixels_to_ground(pixels, camera, T_base_optical):
    """Ground points (x, y) [n, 2] in the base frame where the rays of pixels [n, 2] of a
    PinholeCamera meet z = 0; NaN for rays at or above the horizon."""
    rays = camera.rays(pixels) @ T_base_optical[:3, :3].T    # base-frame directions
    return ray_ground(rays, T_base_optical[:3, 3])


def ground_to_pixels(points_xy, camera, T_base_optical):
    """Pixels (u, v) [n, 2] of ground points (x, y, 0) with distortion, and depth [n] along
    the optical axis (<= 0: behind the camera)."""
    points = np.concatenate([np.asarray(points_xy, np.float64),
                             np.zeros((len(points_xy), 1))], 1)
    return camera.project_from_base(points, T_base_optical)


def horizon_row(camera, T_base_optical, u):
    """Row v (float) of the horizon at column u for an undistorted pinhole camera: pixels
    below it (larger v) see the ground."""
    R = T_base_optical[:3, :3]
    # ray(u, v) = K^-1 (u, v, 1); its base z = R[2] . ray = 0 solves linearly for v
    a = R[2] @ np.linalg.inv(camera.K)
    return -(a[0] * u + a[2]) / a[1]


class GroundView:
    """What one camera at one pose sees of the ground, computed once: the ground point of
    every pixel centre (NaN above the horizon), the bearing of every pixel's ray (azimuth in
    the base frame from the optical axis's heading) and the first row that can see ground.

    camera: PinholeCamera of the label images; T_base_optical [4, 4].
    """

    def __init__(self, camera, T_base_optical):
        self.camera = camera
        self.T = np.asarray(T_base_optical, np.float64)
        if self.T[2, 3] <= 0:
            raise ValueError(f'camera height above the ground must be > 0, got {self.T[2, 3]}')
        height, width = camera.size
        v, u = np.mgrid[0:height, 0:width]
        rays = camera.rays(np.stack([u.ravel(), v.ravel()], 1)) @ self.T[:3, :3].T
        self.ground = ray_ground(rays, self.T[:3, 3])                      # [h * w, 2]
        self.pixel_ground = self.ground.reshape(height, width, 2).astype(np.float32)
        self.camera_xy = self.T[:2, 3]
        self.heading = math.atan2(self.T[1, 2], self.T[0, 2])
        bearing = self.bearing(rays[:, :2]).reshape(height, width).astype(np.float32)
        self.row_bearing = np.ascontiguousarray(bearing[::SILHOUETTE_ROW_STEP])
        # rows above this one see no ground: no contact can lie there
        rows = np.nonzero(np.isfinite(self.pixel_ground[..., 0]).any(1))[0]
        self.contact_row0 = max(0, int(rows[0]) - 1) if len(rows) else height

    def bearing(self, directions):
        """Azimuth (rad) of base-frame directions [n, 2] from the camera's heading."""
        angle = np.arctan2(directions[:, 1], directions[:, 0]) - self.heading
        return (angle + math.pi) % (2 * math.pi) - math.pi

    def top_row(self, rel, height):
        """Highest image row (smallest v) of the tops of boxes on rectangles (corners
        relative to the camera [P, A, 4, 2]) with heights [P]; NaN where a corner lies
        behind the camera."""
        R, t = self.T[:3, :3], self.T[:3, 3]
        up = (height - t[2])[:, None, None, None]
        optical = rel[..., :1] * R[0] + rel[..., 1:] * R[1] + up * R[2]      # [P, A, 4, 3]
        depth = optical[..., 2]
        v = self.camera.project(np.where(depth[..., None] > 1e-3, optical, 1.0)
                                .reshape(-1, 3))[:, 1].reshape(depth.shape)
        return np.where(depth > 1e-3, v, np.nan).min(-1)


def contacts(view, id_role, ids_flat, width):
    """Contact columns u [n], their ground points [n, 2] and segment ids [n], sorted by
    segment then column: per segment and column the lowest obstacle pixel with ground
    directly below (higher ones, ground seen under a table top or a car body, lie behind
    it). Only rows that can see ground (and the one above them) are looked at, and only
    where the label changes from one row to the next (a contact always does): the roles
    of those few pixels are looked up, not the whole image's."""
    lower = ids_flat[view.contact_row0 * width:]
    change = np.flatnonzero(lower[:-width] != lower[width:])
    above, below = lower[change], lower[change + width]
    role_below = np.take(id_role, below, mode='clip')
    contact = (np.take(id_role, above, mode='clip') == ROLE_OBSTACLE) & \
        ((role_below == ROLE_FREE) | (role_below == ROLE_COST))
    ids = above[contact].astype(np.int64)
    v, u = np.divmod(change[contact], width)
    # the lowest of each segment and column: its last in raster order (sorted by key)
    key = ids * width + u
    _, last = np.unique(key[::-1], return_index=True)
    lowest = len(key) - 1 - last
    ids, u, v = ids[lowest], u[lowest], v[lowest] + view.contact_row0
    # the contact point is the ground point at the lower edge of the obstacle pixel
    below = view.pixel_ground[v + 1, u].astype(np.float64)
    at = view.pixel_ground[v, u].astype(np.float64)
    points = np.where(np.isfinite(at), (at + below) / 2, below)
    ok = np.isfinite(points).all(1)
    return u[ok], points[ok], ids[ok]
