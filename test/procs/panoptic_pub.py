"""Test process: publishes PanopticSegmentation messages with sensor-data QoS.

Usage: panoptic_pub.py WIDTH HEIGHT SECONDS
Publishes at 20 Hz for SECONDS (bounded), a label image whose pixel (r, c) holds
(r * WIDTH + c) % 100000 and a header frame_id 'camera_optical'; prints one JSON line at the end.
"""
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data

from panoptic_ros.msg import PanopticSegmentation, Segment
from panoptic_ros.ros.image_codec import numpy_to_image


def main():
    width, height, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node('panoptic_test_pub')
    pub = node.create_publisher(PanopticSegmentation, 'panoptic', qos_profile_sensor_data)
    label = (np.arange(height * width, dtype=np.int64) % 100000).astype(np.int32)
    label = label.reshape(height, width)
    msg = PanopticSegmentation()
    msg.label = numpy_to_image(label, '32SC1')
    msg.label_divisor = 1000
    msg.segments = [Segment(id=2001, category_id=2, is_thing=True, score=0.9, area=10,
                            x1=1.0, y1=2.0, x2=3.0, y2=4.0)]
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = 'camera_optical'
        msg.label.header = msg.header
        pub.publish(msg)
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({'sent': sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
