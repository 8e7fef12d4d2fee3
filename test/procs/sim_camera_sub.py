"""Test process: subscribes to a sim camera's four topics and reports one complete frame.

Usage: sim_camera_sub.py TIMEOUT_SECONDS
Waits until, for one stamp, an image, its camera_info, its ground-truth panoptic and its
ground-truth occupancy have all arrived; prints one JSON line describing them and exits 0;
exits 3 with {"complete": 0, ...counts} on timeout.
"""
import json
import sys
import time

import numpy as np
import rclpy
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from panoptic_ros.msg import PanopticSegmentation
from panoptic_ros.ros.image_codec import image_to_numpy


def stamp_key(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def main():
    timeout = float(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node('sim_camera_test_sub')
    seen = {'image': {}, 'camera_info': {}, 'panoptic': {}, 'occupancy': {}}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for topic, kind, qos, key in (('image', Image, qos_profile_sensor_data, 'image'),
                                  ('camera_info', CameraInfo, qos_profile_sensor_data,
                                   'camera_info'),
                                  ('ground_truth/panoptic', PanopticSegmentation, reliable,
                                   'panoptic'),
                                  ('ground_truth/occupancy', OccupancyGrid, reliable,
                                   'occupancy')):
        node.create_subscription(kind, topic,
                                 lambda msg, key=key: seen[key].setdefault(stamp_key(msg), msg),
                                 qos)
    deadline = time.monotonic() + timeout
    complete = None
    while complete is None and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        common = set.intersection(*(set(v) for v in seen.values()))
        complete = min(common) if common else None
    if complete is None:
        print(json.dumps({'complete': 0, **{k: len(v) for k, v in seen.items()}}), flush=True)
        sys.exit(3)
    image, info = seen['image'][complete], seen['camera_info'][complete]
    panoptic, grid = seen['panoptic'][complete], seen['occupancy'][complete]
    label = image_to_numpy(panoptic.label)
    ids, counts = np.unique(label, return_counts=True)
    print(json.dumps({
        'complete': 1,
        'image': [image.width, image.height, image.encoding, image.header.frame_id],
        'camera_info': [info.width, info.height, info.header.frame_id, list(info.k)],
        'panoptic_frame': panoptic.header.frame_id,
        'segments_match_label': {s.id: s.area for s in panoptic.segments} ==
        dict(zip(ids.tolist(), counts.tolist())),
        'grid': [grid.header.frame_id, grid.info.width, grid.info.height,
                 grid.info.resolution, sorted(set(grid.data))],
    }), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
