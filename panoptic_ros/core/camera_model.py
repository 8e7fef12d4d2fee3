"""The camera model: one `PinholeCamera` (intrinsics, distortion, image size) and the frames,
used by the simulator, the occupancy projection and the node (as
image_geometry.PinholeCameraModel is in ROS).

Frames (ROS REP 103 / 105 conventions):
- base frame: x forward, y left, z up; the ground is the plane z = 0.
- camera optical frame: z forward (optical axis), x right, y down.
Pixels follow OpenCV / sensor_msgs/CameraInfo: (u, v) = (column, row) with integer values at
pixel centres, so the principal point of a centred lens is ((W - 1) / 2, (H - 1) / 2).
"""

from dataclasses import dataclass
import math

import cv2
import numpy as np

# Rotation from the optical frame to a body frame (x forward, y left, z up) of the camera:
# optical z -> body x, optical x -> -body y, optical y -> -body z.
R_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                                [-1.0, 0.0, 0.0],
                                [0.0, -1.0, 0.0]])


def intrinsics_from_fov(width, height, vertical_fov_deg):
    """3x3 K of a centred pinhole camera with square pixels and the given vertical FOV."""
    fy = (height / 2.0) / math.tan(math.radians(vertical_fov_deg) / 2.0)
    return np.array([[fy, 0.0, (width - 1) / 2.0],
                     [0.0, fy, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def rotation_rpy(roll, pitch, yaw):
    """Rotation matrix of body roll (about x), pitch (about y, positive = nose down), yaw
    (about z), applied as R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_pose_in_base(x, y, height, roll, pitch, yaw):
    """4x4 transform T_base_optical of a camera at (x, y, height) with body roll/pitch/yaw
    (radians; pitch > 0 looks down)."""
    transform = np.eye(4)
    transform[:3, :3] = rotation_rpy(roll, pitch, yaw) @ R_BODY_FROM_OPTICAL
    transform[:3, 3] = (x, y, height)
    return transform


def rpy_from_base_optical(T_base_optical):
    """(roll, pitch, yaw) of camera_pose_in_base for a 4x4 T_base_optical (inverse of it)."""
    R = np.asarray(T_base_optical)[:3, :3] @ R_BODY_FROM_OPTICAL.T
    pitch = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    return math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])


def camera_info_dict(K, width, height, frame_id='camera_optical'):
    """A sensor_msgs/CameraInfo-compatible dict (no distortion)."""
    P = np.zeros((3, 4))
    P[:3, :3] = K
    return {'width': int(width), 'height': int(height), 'frame_id': frame_id,
            'distortion_model': 'plumb_bob', 'd': [0.0] * 5,
            'k': [float(v) for v in K.flatten()], 'r': [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
            'p': [float(v) for v in P.flatten()]}


DISTORTION_LENGTHS = (0, 4, 5, 8, 12, 14)   # the coefficient counts OpenCV accepts


def camera_info_problem(width, height, K, D):
    """Why a CameraInfo (width, height, K 9 values, D) cannot be used, or None if it can.

    Catches what drivers get wrong: zero size (an uncalibrated camera), all-zero or
    non-finite K, a non-positive focal length, a principal point outside the image, and a
    distortion vector OpenCV cannot use.
    """
    K = np.asarray(K, np.float64)
    D = np.asarray(D, np.float64)
    if width <= 0 or height <= 0:
        return f'camera_info has zero size ({width}x{height}): the camera is not calibrated'
    if K.size != 9 or not np.isfinite(K).all():
        return f'camera_info K is not 9 finite values ({K.tolist()})'
    K = K.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return f'camera_info K has focal lengths fx={K[0, 0]}, fy={K[1, 1]} (must be > 0)'
    if not (0 <= K[0, 2] < width and 0 <= K[1, 2] < height):
        return (f'camera_info principal point ({K[0, 2]}, {K[1, 2]}) lies outside the '
                f'{width}x{height} image')
    if D.size not in DISTORTION_LENGTHS or not np.isfinite(D).all():
        finite = '' if np.isfinite(D).all() else ', not all finite'
        return (f'camera_info D has {D.size} values{finite}; OpenCV uses '
                f'{", ".join(map(str, DISTORTION_LENGTHS))}')
    return None


def transform_from_quaternion(translation, quaternion):
    """4x4 transform from a translation (x, y, z) and a unit quaternion (x, y, z, w), as in
    geometry_msgs/Transform. The quaternion is normalised; a zero one raises ValueError."""
    q = np.asarray(quaternion, np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f'rotation quaternion {q.tolist()} is not a rotation')
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = translation
    return T


def planar_pose(T):
    """(x, y, yaw) of a 4x4 transform on the ground plane (a robot's pose in odom)."""
    return float(T[0, 3]), float(T[1, 3]), math.atan2(T[1, 0], T[0, 0])


def scale_intrinsics(K, sx, sy):
    """K of the same camera after resizing its images by (sx, sy), with pixel centres at
    integer coordinates: u' + 0.5 = sx (u + 0.5)."""
    K = np.array(K, np.float64)
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 1] *= sy
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """A calibrated camera: K [3, 3], distortion D (OpenCV plumb_bob / rational_polynomial
    coefficients, zeros when undistorted) and the image size it describes.

    Build it with `from_camera_info` (a sensor_msgs/CameraInfo or camera_info_dict()), or
    `from_fov`; `problem_of` says why a CameraInfo cannot be used.
    """
    K: np.ndarray
    D: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        K = np.asarray(self.K, np.float64).ravel()
        D = np.zeros(5) if self.D is None or len(self.D) == 0 else \
            np.asarray(self.D, np.float64).ravel()
        problem = camera_info_problem(self.width, self.height, K, D)
        if problem is not None:
            raise ValueError(problem)
        K = K.reshape(3, 3)
        object.__setattr__(self, 'K', K)
        object.__setattr__(self, 'D', D)
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))

    @classmethod
    def from_camera_info(cls, info):
        """From a sensor_msgs/CameraInfo message or a camera_info_dict() dict."""
        get = info.get if isinstance(info, dict) else lambda key: getattr(info, key)
        return cls(np.asarray(get('k'), np.float64), np.asarray(get('d'), np.float64),
                   get('width'), get('height'))

    @classmethod
    def from_fov(cls, width, height, vertical_fov_deg):
        """A centred, undistorted camera with square pixels (intrinsics_from_fov)."""
        return cls(intrinsics_from_fov(width, height, vertical_fov_deg), None, width, height)

    @staticmethod
    def problem_of(width, height, K, D):
        """Why (width, height, K, D) of a CameraInfo cannot be used, or None."""
        return camera_info_problem(width, height, K, D)

    @property
    def size(self):
        """(height, width) of the images, as numpy shapes are."""
        return (self.height, self.width)

    @property
    def distorted(self):
        return bool(self.D.any())

    @property
    def fx(self):
        return float(self.K[0, 0])

    @property
    def fy(self):
        return float(self.K[1, 1])

    @property
    def cx(self):
        return float(self.K[0, 2])

    @property
    def cy(self):
        return float(self.K[1, 2])

    def key(self):
        """Hashable identity (for caches of per-camera tables)."""
        return (self.K.tobytes(), self.D.tobytes(), self.width, self.height)

    def scaled(self, width, height):
        """The same camera for its images resized to (width, height) pixels."""
        K = scale_intrinsics(self.K, width / self.width, height / self.height)
        return PinholeCamera(K, self.D, width, height)

    def rays(self, pixels):
        """Rays (x, y, 1) [n, 3] in the optical frame of pixels [n, 2] (u, v), undistorted
        (image_geometry's projectPixelTo3dRay, with z = 1 instead of unit length)."""
        pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        normalized = cv2.undistortPoints(pixels, self.K, self.D).reshape(-1, 2)
        return np.concatenate([normalized, np.ones((len(normalized), 1))], 1)

    def project(self, points_optical):
        """Pixels (u, v) [n, 2] of points [n, 3] in the optical frame, with distortion
        (project3dToPixel); points must lie in front of the camera (z > 0)."""
        points = np.asarray(points_optical, np.float64).reshape(-1, 1, 3)
        if not self.distorted:
            with np.errstate(divide='ignore', invalid='ignore'):
                z = points[:, 0, 2]
                return np.stack([self.fx * points[:, 0, 0] / z + self.cx,
                                 self.fy * points[:, 0, 1] / z + self.cy], 1)
        uv, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), self.K, self.D)
        return uv.reshape(-1, 2)

    def project_from_base(self, points_base, T_base_optical):
        """Pixels (u, v) [n, 2] of base-frame points [n, 3] and their depth z [n] along the
        optical axis (metres; <= 0 behind the camera)."""
        R, t = T_base_optical[:3, :3], T_base_optical[:3, 3]
        optical = (np.asarray(points_base, np.float64) - t) @ R       # = R^T (p - t)
        return self.project(optical), optical[:, 2]

    def to_camera_info(self, frame_id='camera_optical'):
        """A sensor_msgs/CameraInfo-compatible dict."""
        info = camera_info_dict(self.K, self.width, self.height, frame_id)
        info['d'] = [float(v) for v in self.D]
        return info
