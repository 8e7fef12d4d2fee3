"""Poses from tf at an image's stamp: each camera's in the base frame (tf2 when it is
installed and use_tf is set, else the fixed camera_xyz / camera_rpy parameters of that
camera), and the robot's in the odometry frame (tf2 where it has odom -> base, else the
Odometry topic's history, ros.cameras.Odometry)."""

from rclpy.duration import Duration
from rclpy.time import Time

from panoptic_ros.core.camera_model import planar_pose, transform_from_quaternion


class Extrinsics:
    """`extrinsics(header, camera)` -> T_base_optical [4, 4] at header.stamp for
    header.frame_id (camera: index in the cameras parameter, for the fallback); raises
    LookupError (naming both frames) when tf2 has no usable transform. `robot_pose(header)`
    -> (x, y, yaw) of the base in the odometry frame, or None where tf2 is absent or has no
    such transform."""

    def __init__(self, node, settings):
        self.base_frame = settings.grid.frame_id
        self.odom_frame = settings.map.frame_id
        self.fixed = settings.T_base_optical
        self.timeout = Duration(seconds=settings.tf_timeout)
        self.buffer = None
        if not settings.use_tf:
            return
        try:
            import tf2_ros
        except ImportError:
            node.get_logger().info('tf2_ros is not available: camera extrinsics from the '
                                   'camera_xyz / camera_rpy parameters, robot poses from '
                                   'odometry')
            return
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def _lookup(self, target, source, stamp, timeout):
        tf = self.buffer.lookup_transform(target, source, Time.from_msg(stamp), timeout)
        q, t = tf.transform.rotation, tf.transform.translation
        return transform_from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))

    def __call__(self, header, camera=0):
        if self.buffer is None:
            return self.fixed[camera]
        try:
            return self._lookup(self.base_frame, header.frame_id, header.stamp, self.timeout)
        except Exception as exc:   # tf2's lookup exceptions, a zero quaternion
            raise LookupError(f'no transform {self.base_frame} <- {header.frame_id} at the '
                              f'image stamp ({exc})') from exc

    def robot_pose(self, header):
        if self.buffer is None:
            return None
        try:
            T = self._lookup(self.odom_frame, self.base_frame, header.stamp, Duration())
        except Exception:   # no odom -> base in tf: the odometry topic decides
            return None
        return planar_pose(T)
