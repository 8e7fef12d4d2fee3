"""sim_camera_node across processes: real rclpy, a rendered sequence replayed from disk.

Verifies: a subscriber process receives, for one stamp, the image (rgb8, frame_id), its
CameraInfo (same stamp, K from the sequence), the ground-truth panoptic label whose segments
agree with its pixels, and the ground-truth occupancy grid in the base frame; a bad rate
parameter makes the node exit with an error naming it; with loop false the node ends by
itself after the sequence. Does not verify live rendering over ROS at rate (slow) or the
publishing rate itself (benchmarks).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from panoptic_ros.core.sim.sequence import render_sequence, Sequence
from panoptic_ros.core.sim.world import SimConfig

pytestmark = pytest.mark.ros

NODE = [sys.executable, '-m', 'panoptic_ros.ros.sim_camera_node', '--ros-args']


def test_replay_publishes_image_info_and_ground_truth(tmp_path, ros_env, start_proc):
    render_sequence(tmp_path / 'seq', seed=1, frames=3, fps=5.0,
                    config=SimConfig(width=160, height=120))
    sequence = Sequence(tmp_path / 'seq')
    sub = start_proc('sim_camera_sub.py', 20, env=ros_env)
    node = subprocess.Popen(NODE + ['-p', f'sequence:={tmp_path / "seq"}', '-p', 'rate:=10.0',
                                    '-p', 'loop:=true'],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = sub.communicate(timeout=40)
    finally:
        node.kill()
        node.communicate()
    assert sub.returncode == 0, f'{out} {err}'
    got = json.loads(out.strip().splitlines()[-1])
    assert got['image'] == [160, 120, 'rgb8', 'camera_optical']
    assert got['camera_info'][:3] == [160, 120, 'camera_optical']
    assert got['camera_info'][3] == sequence.camera_info['k']
    assert got['panoptic_frame'] == 'camera_optical' and got['segments_match_label']
    assert got['grid'][:3] == ['base_link', 200, 200]
    assert abs(got['grid'][3] - 0.05) < 1e-6                 # float32 field
    assert set(got['grid'][4]) <= {-1, 0, 50, 100}


def test_bad_rate_is_refused(ros_env, tmp_path):
    result = subprocess.run(NODE + ['-p', 'rate:=0.0'], env=ros_env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert 'parameter rate=0.0: must be in (0.0, 1000.0]' in result.stderr


def test_without_loop_the_node_ends_after_the_sequence(ros_env, tmp_path):
    render_sequence(tmp_path / 'seq', seed=2, frames=2, fps=5.0,
                    config=SimConfig(width=80, height=60))
    result = subprocess.run(NODE + ['-p', f'sequence:={tmp_path / "seq"}', '-p', 'rate:=20.0',
                                    '-p', 'loop:=false'],
                            env=ros_env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert 'sequence finished after 2 frames' in result.stderr + result.stdout


def test_rig_replay_publishes_every_camera_and_odometry_with_one_stamp(tmp_path, ros_env):
    """A rig folder: each camera's image and camera_info under its name (frame_id
    <name>_optical), odometry equal to the rig's for that moment, all with one stamp."""
    import dataclasses
    import math
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image
    from panoptic_ros.core.sim.rig import (render_rig_sequence, RigSequence, SURROUND,
                                           SURROUND_SCENE)
    from ros_session import rclpy_node, spin_until
    render_rig_sequence(tmp_path / 'rig', 3, 3, SURROUND[:2], fps=5.0, speed=1.0,
                        config=dataclasses.replace(SURROUND_SCENE, width=96, height=72))
    rig = RigSequence(tmp_path / 'rig')
    node = subprocess.Popen(NODE + ['-p', f'sequence:={tmp_path / "rig"}', '-p', 'rate:=10.0'],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    got = {}
    try:
        with rclpy_node(ros_env, 'rig_sub') as sub:
            def keep(key):
                return lambda m: got.setdefault(key, {}).setdefault(
                    (m.header.stamp.sec, m.header.stamp.nanosec), m)
            from rclpy.qos import qos_profile_sensor_data as sensor
            for name in ('front', 'left'):
                sub.create_subscription(Image, f'{name}/image', keep(name), sensor)
                sub.create_subscription(CameraInfo, f'{name}/camera_info',
                                        keep(f'{name}_info'), sensor)
            sub.create_subscription(Odometry, 'odom', keep('odom'), 10)

            def common():
                keys = [set(got.get(k, {})) for k in ('front', 'left', 'front_info', 'odom')]
                return set.intersection(*keys) if all(keys) else set()
            assert spin_until(sub, lambda: common(), 30), {k: len(v) for k, v in got.items()}
    finally:
        node.kill()
        node.communicate()
    stamp = min(common())
    assert got['front'][stamp].header.frame_id == 'front_optical'
    assert got['left'][stamp].header.frame_id == 'left_optical'
    assert (got['left'][stamp].width, got['left'][stamp].height) == (96, 72)
    odom = got['odom'][stamp]
    assert odom.header.frame_id == 'odom' and odom.child_frame_id == 'base_link'
    p, q = odom.pose.pose.position, odom.pose.pose.orientation
    row = np.argmin(np.hypot(rig.odometry[:, 1] - p.x, rig.odometry[:, 2] - p.y))
    assert math.hypot(rig.odometry[row, 1] - p.x, rig.odometry[row, 2] - p.y) < 1e-6
    assert 2 * math.atan2(q.z, q.w) == pytest.approx(rig.odometry[row, 3])
