"""panoptic_node's camera extrinsics from tf2, where tf2_ros is importable (a ROS 2 install;
the standalone venv has no tf2 package on PyPI, so this module skips there).

Verifies, with the node in its own process and a real tf2_ros StaticTransformBroadcaster
over DDS: with use_tf (the default) the occupancy grid is the projection of the node's own
panoptic labels through the transform base_link <- cam_optical published on /tf_static, not
through the camera_xyz / camera_rpy fallback; an image from a frame without a transform
gets no grid, is counted as occupancy_skipped_no_tf on /diagnostics, and its panoptic
labels still arrive. The shipped model labels the rendered frame (an untrained one sees no
ground, and every transform gives the same empty grid). Does not verify a moving
(non-static) transform.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from panoptic_ros.core.camera_model import (camera_info_dict, camera_pose_in_base,
                                            transform_from_quaternion)
from panoptic_ros.core.sim.taxonomy import default_model_config
from panoptic_ros.core.occupancy import OccupancyProjector
from panoptic_ros.core.settings import Settings
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip('rclpy')
tf2_ros = pytest.importorskip('tf2_ros')
from ros_session import rclpy_node, spin_until  # noqa: E402 (after the import checks)


def quaternion_of(R):
    """(x, y, z, w) of a rotation matrix (Shepperd's method)."""
    w = math.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return x, y, z, w


def test_extrinsics_from_tf2(ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import (DurabilityPolicy, QoSProfile, qos_profile_sensor_data,
                           ReliabilityPolicy)
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from panoptic_ros.msg import PanopticSegmentation
    from panoptic_ros.ros.image_codec import image_to_numpy, numpy_to_image
    from panoptic_ros.ros.messages import camera_info_msg

    frame = render_random_frame(104, SimConfig())
    fallback = camera_pose_in_base(0.0, 0.0, 1.2, 0.0, 0.25, 0.0)
    T = camera_pose_in_base(0.3, -0.2, 1.5, 0.03, 0.35, 0.08)     # what tf2 says
    q = quaternion_of(T[:3, :3])
    np.testing.assert_allclose(transform_from_quaternion(T[:3, 3], q), T, atol=1e-12)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'panoptic_ros.ros.panoptic_node', '--ros-args',
         '-p', 'backend:=torch', '-p', 'use_tf:=true', '-p', 'tf_timeout:=0.2',
         '-p', f'cache_dir:={tmp_path / "cache"}',
         '-p', 'camera_xyz:=[0.0, 0.0, 1.2]', '-p', 'camera_rpy:=[0.0, 0.25, 0.0]'],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with rclpy_node(ros_env, 'tf2_extrinsics_test') as node:
        try:
            static = tf2_ros.StaticTransformBroadcaster(node)
            tf = TransformStamped()
            tf.header.frame_id, tf.child_frame_id = 'base_link', 'cam_optical'
            (tf.transform.translation.x, tf.transform.translation.y,
             tf.transform.translation.z) = T[:3, 3]
            (tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z,
             tf.transform.rotation.w) = q
            static.sendTransform(tf)
            got = {'panoptic': {}, 'occupancy': {}}
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(PanopticSegmentation, 'panoptic', lambda m: got[
                'panoptic'].setdefault((m.header.frame_id, m.header.stamp.sec), m), reliable)
            node.create_subscription(OccupancyGrid, 'occupancy', lambda m: got[
                'occupancy'].setdefault(m.header.stamp.sec, m), latched)
            diagnostics = []
            node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
            image_pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
            info_pub = node.create_publisher(CameraInfo, 'camera_info',
                                             qos_profile_sensor_data)
            info = camera_info_dict(frame.K, 640, 480)

            def send(frame_id, sec):
                header = Header(frame_id=frame_id)
                header.stamp.sec = sec
                info_pub.publish(camera_info_msg(info, header))
                image_pub.publish(numpy_to_image(frame.rgb, 'rgb8', header))
                spin_until(node, lambda: False, 0.5)

            stamp = None
            for sec in range(3000, 3090):
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                send('cam_optical', sec)
                both = set(got['occupancy']) & {s for f, s in got['panoptic']
                                                if f == 'cam_optical'}
                if both:
                    stamp = min(both)
                    break
            assert stamp is not None, f'no grid: {len(got["panoptic"])} panoptic messages'
            labels = image_to_numpy(got['panoptic'][('cam_optical', stamp)].label)
            grid_msg = got['occupancy'][stamp]
            grid = np.frombuffer(bytes(grid_msg.data), np.int8).reshape(
                grid_msg.info.height, grid_msg.info.width)
            settings = Settings.from_params({})
            config = settings.occupancy_config(list(default_model_config().classes), 1000)

            def projection(transform):
                return OccupancyProjector(frame.camera, transform,
                                          settings.grid, config, 11)(labels)[0]
            assert (grid == 0).sum() > 1000                      # the shipped model sees road
            assert np.array_equal(grid, projection(T))
            assert (grid != projection(fallback)).sum() > 1000
            # a frame tf2 knows nothing of: labels, no grid, counted
            for sec in range(4000, 4030):
                send('nowhere_optical', sec)
                if any(f == 'nowhere_optical' for f, _ in got['panoptic']):
                    break

            def skipped():
                return max([int(v.value) for d in diagnostics for s in d.status
                            for v in s.values if v.key == 'occupancy_skipped_no_tf'] or [0])
            assert spin_until(node, lambda: skipped() > 0, 10), 'not counted'
            assert not [s for s in got['occupancy'] if s >= 4000]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
