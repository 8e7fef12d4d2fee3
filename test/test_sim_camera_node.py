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
