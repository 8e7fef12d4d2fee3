"""panoptic_node's inputs: one CameraInput per entry of the `cameras` parameter, the robot's
poses (RobotPoses), and the grids every camera contributes to (SharedGrids: the fused
`occupancy` of one cycle and `occupancy/accumulated`, the map that remembers).

Topics of a camera named `front`: front/image, front/image/compressed, front/camera_info in,
front/panoptic, front/semantic, front/panoptic/colored, front/detections,
front/detections/markers out (ros.messages.OUTPUTS); the camera '' uses the node's own
topics, exactly as a single-camera node. occupancy and occupancy/accumulated are the node's,
whatever the number of cameras.
"""

import time

from nav_msgs.msg import Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from panoptic_ros.core.camera_model import (PinholeCamera, planar_pose,
                                            transform_from_quaternion)
from panoptic_ros.core.occupancy.accumulated import AccumulatedMap, PoseHistory
from panoptic_ros.core.occupancy.fusion import fuse
from panoptic_ros.core.settings import CAMERA_OUTPUTS, GRID_OUTPUTS
from panoptic_ros.ros import messages
from panoptic_ros.ros.messages import OUTPUTS, stamp_seconds


class CameraInput:
    """One camera: subscriptions, its newest CameraInfo, its publishers, when it last sent.

    store(camera, msg, check) is the node's handler of an image message of this camera
    (check: a raw Image whose header fields are checked first)."""

    def __init__(self, node, index, name, settings, qos, store):
        self.node, self.index, self.name = node, index, name
        self.label = name or 'camera'   # in counters and diagnostics
        self.tag = f'{name}: ' if name else ''   # in warnings
        prefix = f'{name}/' if name else ''
        self.camera, self.problem = None, 'no camera_info received yet'
        self.last_frame = None   # monotonic time of the last image
        self.subs = [
            node.create_subscription(Image, prefix + 'image',
                                     lambda msg: store(self, msg, True), qos),
            node.create_subscription(CameraInfo, prefix + 'camera_info', self.on_info, qos)]
        if settings.use_compressed:
            self.subs.append(node.create_subscription(
                CompressedImage, prefix + 'image/compressed',
                lambda msg: store(self, msg, False), qos))
        self.pubs = {out: node.create_publisher(OUTPUTS[out][1], prefix + OUTPUTS[out][0],
                                                OUTPUTS[out][2])
                     for out in settings.outputs if out in CAMERA_OUTPUTS}

    def on_info(self, msg):
        stats = self.node.stats
        stats.count('received_camera_info')
        try:
            self.camera, self.problem = PinholeCamera.from_camera_info(msg), None
        except ValueError as exc:
            stats.count('dropped_bad_camera_info')
            self.camera, self.problem = None, str(exc)
            self.node.warn(f'camera_info {self.label}', f'{self.tag}{exc}: occupancy disabled '
                           'until a valid camera_info arrives')

    def geometry(self, header, extrinsics):
        """(PinholeCamera or None, T_base_optical or None) of a frame; why not is counted
        and warned."""
        node = self.node
        if self.camera is None:
            node.stats.count('occupancy_skipped_camera_info')
            node.warn(f'no_camera {self.label}', f'{self.tag}{self.problem}: occupancy and '
                      'ground positions disabled, other outputs continue', 10.0)
            return None, None
        try:
            return self.camera, extrinsics(header, self.index)
        except LookupError as exc:
            node.stats.count('occupancy_skipped_no_tf')
            node.warn(f'tf {self.label}', f'{self.tag}{exc}: occupancy skipped')
            return self.camera, None

    def wants(self):
        """The per-camera outputs somebody subscribes to."""
        return {out for out, pub in self.pubs.items() if pub.get_subscription_count()}

    def sending(self, now, timeout):
        """Sent a frame within the last `timeout` seconds."""
        return self.last_frame is not None and now - self.last_frame <= timeout

    def stale(self, now, timeout):
        """Sent frames before, but none for `timeout` seconds."""
        return self.last_frame is not None and not self.sending(now, timeout)

    def destroy(self):
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)


def sending_cameras(cameras, timeout):
    """expected() of FrameWorker's gather: the indices of the cameras sending frames."""
    return lambda: [c.index for c in cameras if c.sending(time.monotonic(), timeout)]


class RobotPoses:
    """The robot's pose (x, y, yaw) in the odometry frame at an image stamp: tf (odom ->
    base) where it has it, else the history of the `odom_topic` Odometry messages."""

    def __init__(self, node, settings, extrinsics):
        self.extrinsics, self.frame_id = extrinsics, settings.map.frame_id
        self.history = PoseHistory(tolerance=settings.pose_tolerance)
        self.node = node
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        self.sub = node.create_subscription(Odometry, settings.odom_topic, self.on_odometry,
                                            qos)

    def on_odometry(self, msg):
        if msg.header.frame_id and msg.header.frame_id != self.frame_id:
            self.node.stats.count('dropped_odometry_frame')
            self.node.warn('odom_frame', f'odometry in frame {msg.header.frame_id!r}, not '
                           f'{self.frame_id!r} (odom_frame_id): ignored')
            return
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            T = transform_from_quaternion((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except ValueError as exc:   # a zero quaternion
            self.node.stats.count('dropped_bad_odometry')
            self.node.warn('odom_bad', f'odometry ignored: {exc}')
            return
        self.history.add(stamp_seconds(msg.header.stamp), *planar_pose(T))

    def at(self, header):
        """(x, y, yaw); raises LookupError saying why there is none."""
        pose = self.extrinsics.robot_pose(header)
        return pose if pose is not None else self.history.at(stamp_seconds(header.stamp))

    def destroy(self):
        self.node.destroy_subscription(self.sub)


class SharedGrids:
    """The grids of all cameras: `occupancy` (the cycle's camera grids fused by the
    fusion_rule) and `occupancy/accumulated` (AccumulatedMap, every camera grid added at the
    robot's pose at its image stamp)."""

    def __init__(self, node, settings, poses):
        self.node, self.settings, self.poses = node, settings, poses
        self.map = AccumulatedMap(settings.map)
        self.pubs = {out: node.create_publisher(OUTPUTS[out][1], OUTPUTS[out][0],
                                                OUTPUTS[out][2])
                     for out in GRID_OUTPUTS if out in settings.outputs}

    def wants(self):
        return {out for out, pub in self.pubs.items() if pub.get_subscription_count()}

    def publish(self, wants, grids):
        """grids: [(int8 grid, T_base_optical, image header)] of one cycle (base frame);
        returns the seconds it took."""
        start, s = time.perf_counter(), self.settings
        newest = max((header.stamp for _, _, header in grids), key=stamp_seconds)
        if 'occupancy' in wants:
            fused = fuse([g for g, _, _ in grids], s.fusion_rule,
                         [T[:2, 3] for _, T, _ in grids], s.grid)
            self.pubs['occupancy'].publish(messages.occupancy_msg(
                Header(stamp=newest, frame_id=s.grid.frame_id), fused, s.grid.resolution,
                s.grid.origin_x, s.grid.origin_y))
        if 'accumulated' in wants:
            updated = False
            for grid, _, header in grids:
                try:
                    pose = self.poses.at(header)
                except LookupError as exc:   # the map skips this frame; outputs go on
                    self.node.stats.count('accumulated_skipped_no_pose')
                    self.node.warn('pose', f'no robot pose at the image stamp ({exc}): '
                                   'occupancy/accumulated not updated', 10.0)
                    continue
                self.map.update(grid, s.grid, pose, stamp_seconds(header.stamp))
                updated = True
            if updated:
                x, y = self.map.origin_xy
                self.pubs['accumulated'].publish(messages.occupancy_msg(
                    Header(stamp=newest, frame_id=s.map.frame_id), self.map.values(),
                    s.map.resolution, x, y))
        return time.perf_counter() - start

    def destroy(self):
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)
