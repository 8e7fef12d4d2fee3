"""Cross-process DDS: one real process publishes a 1280x720 PanopticSegmentation with
best-effort sensor-data QoS, another receives it, through the shipped Fast DDS profile.

Verifies: the shipped profile parses (Fast DDS prints XMLPARSER errors otherwise), the
message arrives whole (size, encoding, checksum of every pixel, frame ids),
and a subscriber in another ROS_DOMAIN_ID receives nothing (the run is isolated).
Does not verify: throughput or latency targets (those are benchmarks).
"""

import json

import numpy as np
import pytest

from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 1280, 720
PUBLISH_SECONDS = 15.0
RECEIVE_TIMEOUT = 12.0


def test_panoptic_segmentation_crosses_processes(ros_env, ros_domain_id, start_proc, tmp_path):
    other_env = isolated_ros_env(pick_domain_id(exclude={ros_domain_id}), tmp_path / 'other')
    sub = start_proc('panoptic_sub.py', RECEIVE_TIMEOUT, env=ros_env)
    foreign_sub = start_proc('panoptic_sub.py', RECEIVE_TIMEOUT / 2, env=other_env)
    pub = start_proc('panoptic_pub.py', WIDTH, HEIGHT, PUBLISH_SECONDS, env=ros_env)

    out, err = sub.communicate(timeout=RECEIVE_TIMEOUT + 20)
    assert sub.returncode == 0, f'nothing arrived: {out} {err}'
    assert 'XMLPARSER' not in err, f'Fast DDS rejected the shipped profile: {err}'
    got = json.loads(out.strip().splitlines()[-1])
    expected_sum = int((np.arange(HEIGHT * WIDTH, dtype=np.int64) % 100000).sum())
    assert (got['width'], got['height'], got['encoding']) == (WIDTH, HEIGHT, '32SC1')
    assert got['label_sum'] == expected_sum
    assert got['frame_id'] == 'camera_optical' and got['label_frame_id'] == 'camera_optical'
    assert got['segment_ids'] == [2001]

    # A subscriber on another domain id must see nothing while the publisher runs.
    foreign_out, _ = foreign_sub.communicate(timeout=RECEIVE_TIMEOUT + 20)
    assert foreign_sub.returncode == 3, f'isolation broken: {foreign_out}'
    assert pub.poll() is None, 'publisher ended before the isolation window closed'
    pub.kill()
