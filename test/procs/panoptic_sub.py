"""Test process: receives PanopticSegmentation messages with sensor-data QoS.

Usage: panoptic_sub.py TIMEOUT_SECONDS
Exits 0 after the first message, printing one JSON line describing it (size, encoding,
frame_id, checksum of the label, transport latency); exits 3 with {"received": 0} when
nothing arrived within the timeout.
"""
import json
import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data

from panoptic_ros.msg import PanopticSegmentation
from panoptic_ros.ros.image_codec import image_to_numpy


def main():
    timeout = float(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node('panoptic_test_sub')
    received = []

    def on_message(msg):
        if not received:
            received.append((msg, node.get_clock().now()))

    node.create_subscription(PanopticSegmentation, 'panoptic', on_message,
                             qos_profile_sensor_data)
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        print(json.dumps({'received': 0}), flush=True)
        sys.exit(3)
    msg, now = received[0]
    label = image_to_numpy(msg.label)
    stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    print(json.dumps({
        'received': 1,
        'width': msg.label.width, 'height': msg.label.height,
        'encoding': msg.label.encoding, 'frame_id': msg.header.frame_id,
        'label_frame_id': msg.label.header.frame_id,
        'label_sum': int(label.astype('int64').sum()),
        'segment_ids': [s.id for s in msg.segments],
        'latency_ms': (now.nanoseconds - stamp_ns) / 1e6,
    }), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
