"""sim_camera_node: a camera driver for the simulated world.

Publishes, at `rate` Hz, what a camera driver publishes, plus the ground truth for
evaluation on separate topics:
  image                    sensor_msgs/Image (rgb8), sensor-data QoS (best effort, depth 1)
  camera_info              sensor_msgs/CameraInfo, same QoS
  ground_truth/panoptic    panoptic_ros/PanopticSegmentation, reliable
  ground_truth/occupancy   nav_msgs/OccupancyGrid in `base_frame_id`, reliable
Every message of one frame carries the same header stamp (the publishing time, as a driver
stamps at capture); images and labels carry `frame_id`.
Source: `sequence` = a folder from `panoptic-ros-sim sequence` (replayed from disk, far
faster than rendering), or empty to render random scenes live (`seed`, `width`, `height`).
A folder from `panoptic-ros-sim rig` (several cameras on one robot, core/sim/rig.py)
publishes each camera's topics under its name (front/image, front/camera_info,
front/ground_truth/panoptic, ...; frame_id <name>_optical), all cameras of a moment with one
stamp, plus ground_truth/occupancy (the fused grid's ground truth) and `odom`
(nav_msgs/Odometry, frame odom, child base_frame_id: the robot's pose at that stamp).
At the end of a sequence: `loop` true starts over, false shuts the node down.
`wait_for_subscribers` N > 0 holds the first frame until `image` has had N subscribers and
every other topic one for half a second (the demo uses it so that no replayed frame is lost to
DDS discovery; runner.FirstFrameGate says why the half second).
"""

import math
import sys

from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from panoptic_ros.core.camera_model import camera_info_dict
from panoptic_ros.core.settings import Spec
from panoptic_ros.core.sim.rig import fused_truth, is_rig, RigSequence
from panoptic_ros.core.sim.sequence import Sequence
from panoptic_ros.core.sim.taxonomy import LABEL_DIVISOR
from panoptic_ros.core.sim.world import render_random_frame, SimConfig
from panoptic_ros.msg import PanopticSegmentation
from panoptic_ros.ros.image_codec import numpy_to_image
from panoptic_ros.ros.messages import camera_info_msg, occupancy_msg, panoptic_msg
from panoptic_ros.ros.parameters import declare_parameters
from panoptic_ros.ros.runner import FirstFrameGate, run_node

PARAMETERS = {
    'sequence': Spec('', 'folder of a rendered sequence; empty renders random scenes live'),
    'rate': Spec(10.0, 'publishing rate in Hz', low=0.0, high=1000.0, low_open=True),
    'loop': Spec(True, 'restart the sequence at its end (false: shut down after the last '
                       'frame)'),
    'frame_id': Spec('camera_optical', 'frame_id of images and labels (camera optical frame)'),
    'base_frame_id': Spec('base_link', 'frame of the ground-truth occupancy grid'),
    'publish_ground_truth': Spec(True, 'also publish ground_truth/panoptic and /occupancy'),
    'wait_for_subscribers': Spec(0, 'hold the first frame until `image` has had this many '
                                    'subscribers and every other topic one for 0.5 s (a '
                                    'replay then loses no frame to discovery); 0: do not '
                                    'wait',
                                 low=0, high=100),
    'seed': Spec(0, 'live rendering: seed of the first scene (one new scene per frame)',
                 low=0, high=2 ** 31 - 1),
    'width': Spec(640, 'live rendering: image width in pixels', low=32, high=4096),
    'height': Spec(480, 'live rendering: image height in pixels', low=32, high=4096),
}


class SimCameraNode(Node):
    def __init__(self):
        super().__init__('sim_camera')
        self.p = values = declare_parameters(self, PARAMETERS)
        self.rig = RigSequence(values['sequence']) \
            if values['sequence'] and is_rig(values['sequence']) else None
        self.sequence = Sequence(values['sequence']) \
            if values['sequence'] and self.rig is None else None
        self.index = 0
        self.published = 0
        self.first_frame_gate = FirstFrameGate(self.p['wait_for_subscribers'])
        self.finished = False
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        names = [c.name for c in self.rig.cameras] if self.rig else ['']
        self.pubs = {}   # camera name -> (image, camera_info, ground-truth panoptic) publishers
        for name in names:
            prefix = f'{name}/' if name else ''
            self.pubs[name] = (
                self.create_publisher(Image, prefix + 'image', qos_profile_sensor_data),
                self.create_publisher(CameraInfo, prefix + 'camera_info',
                                      qos_profile_sensor_data),
                self.create_publisher(PanopticSegmentation, prefix + 'ground_truth/panoptic',
                                      reliable))
        self.grid_pub = self.create_publisher(OccupancyGrid, 'ground_truth/occupancy', reliable)
        self.odom_pub = self.create_publisher(Odometry, 'odom', 10) if self.rig else None
        self.timer = self.create_timer(1.0 / values['rate'], self.tick)
        source = values['sequence'] or f"live rendering from seed {values['seed']}"
        self.get_logger().info(f"publishing {source} at {values['rate']} Hz")

    def next_frame(self):
        """(cameras [(name, rgb, panoptic, segments, occupancy, camera_info dict)], grid spec,
        ground-truth grid, odometry (x, y, yaw) or None) or None at the end."""
        if self.sequence is None and self.rig is None:
            config = SimConfig(width=self.p['width'], height=self.p['height'])
            frame = render_random_frame(self.p['seed'] + self.index, config)
            self.index += 1
            return ([('', frame.rgb, frame.panoptic, frame.segments, frame.occupancy,
                      camera_info_dict(frame.K, config.width, config.height))],
                    frame.grid, frame.occupancy, None)
        if self.index >= (len(self.rig) if self.rig else len(self.sequence)):
            if not self.p['loop']:
                return None
            self.index = 0
        k, self.index = self.index, self.index + 1
        if self.rig is None:
            frame = self.sequence[k]
            return ([('', frame['rgb'], frame['panoptic'], frame['segments'],
                      frame['occupancy'], self.sequence.camera_info)], self.sequence.grid,
                    frame['occupancy'], None)
        cameras = []
        for name, sequence in self.rig.sequences.items():
            frame = sequence[k]
            cameras.append((name, frame['rgb'], frame['panoptic'], frame['segments'],
                            frame['occupancy'], sequence.camera_info))
        return (cameras, self.rig.grid, fused_truth([c[4] for c in cameras]),
                tuple(self.rig.odometry[k, 1:]))

    def _may_start(self):
        image_pub, info_pub, panoptic_pub = next(iter(self.pubs.values()))
        others = [info_pub]
        if self.p['publish_ground_truth']:
            others += [panoptic_pub, self.grid_pub]
        return self.first_frame_gate(image_pub, others)

    def tick(self):
        if self.published == 0 and not self._may_start():
            self.get_logger().info('waiting for subscribers', throttle_duration_sec=5.0)
            return
        frame = self.next_frame()
        if frame is None:
            self.get_logger().info(f'sequence finished after {self.published} frames')
            self.timer.cancel()
            self.finished = True
            return
        cameras, grid, truth, odometry = frame
        stamp = self.get_clock().now().to_msg()
        base = Header(stamp=stamp, frame_id=self.p['base_frame_id'])
        try:
            if odometry is not None:   # first: the pose is there when the images arrive
                self.odom_pub.publish(odometry_msg(stamp, self.p['base_frame_id'], *odometry))
            for name, rgb, panoptic, segments, _, info in cameras:
                header = Header(stamp=stamp, frame_id=f'{name}_optical' if name else
                                self.p['frame_id'])
                image_pub, info_pub, panoptic_pub = self.pubs[name]
                image_pub.publish(numpy_to_image(rgb, 'rgb8', header))
                info_pub.publish(camera_info_msg(info, header))
                if self.p['publish_ground_truth']:
                    panoptic_pub.publish(panoptic_msg(header, panoptic, segments,
                                                      LABEL_DIVISOR))
            if self.p['publish_ground_truth']:
                self.grid_pub.publish(occupancy_msg(base, truth, grid.resolution,
                                                    grid.origin_x, grid.origin_y))
        except RCLError as error:  # e.g. 'cannot publish data' under load
            self.get_logger().warning(f'publish failed: {error}', throttle_duration_sec=5.0)
            return
        self.published += 1


def odometry_msg(stamp, child_frame_id, x, y, yaw, frame_id='odom'):
    """nav_msgs/Odometry of a pose on the ground plane."""
    msg = Odometry(child_frame_id=child_frame_id)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    msg.pose.pose.orientation.z = math.sin(yaw / 2)
    msg.pose.pose.orientation.w = math.cos(yaw / 2)
    return msg


def main(args=None):
    return run_node(SimCameraNode, 'sim_camera_node', args, (FileNotFoundError,))


if __name__ == '__main__':
    sys.exit(main())
