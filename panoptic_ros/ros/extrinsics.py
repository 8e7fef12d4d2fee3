"""The camera's pose in the base frame at an image's stamp: tf2 when it is installed and
use_tf is set, else the fixed camera_xyz / camera_rpy parameters."""

from rclpy.duration import Duration
from rclpy.time import Time

from panoptic_ros.core.camera_model import transform_from_quaternion


class Extrinsics:
    """`extrinsics(header)` -> T_base_optical [4, 4] at header.stamp for header.frame_id;
    raises LookupError (naming both frames) when tf2 has no usable transform."""

    def __init__(self, node, settings):
        self.base_frame = settings.grid.frame_id
        self.fixed = settings.T_base_optical
        self.timeout = Duration(seconds=settings.tf_timeout)
        self.buffer = None
        if not settings.use_tf:
            return
        try:
            import tf2_ros
        except ImportError:
            node.get_logger().info('tf2_ros is not available: camera extrinsics from the '
                                   'camera_xyz / camera_rpy parameters')
            return
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def __call__(self, header):
        if self.buffer is None:
            return self.fixed
        try:
            tf = self.buffer.lookup_transform(self.base_frame, header.frame_id,
                                              Time.from_msg(header.stamp), self.timeout)
            q, t = tf.transform.rotation, tf.transform.translation
            return transform_from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except Exception as exc:   # tf2's lookup exceptions, a zero quaternion
            raise LookupError(f'no transform {self.base_frame} <- {header.frame_id} at the '
                              f'image stamp ({exc})') from exc
