"""panoptic_node with several cameras, end to end: the node in its own process (the shipped
model, the default INT8 backend rebatched to the number of cameras), real rclpy pub/sub;
this process plays the surround rig's cameras (rendered frames of core.sim.rig) and its
odometry.

Verifies, for two and for four cameras: every camera's outputs come under its namespace with
its own image's stamp and frame_id; one network call per cycle, taking every camera's frame
at once once all are sending (batch_wait gathers them whatever the thread scheduling:
network_images == processed, network_calls at most one per cycle plus the first cycle's
cameras); every fused
`occupancy` grid equals the projections of the same cycle's published labels combined by
occupied_wins (the cycle's cameras: the subset whose combination matches, at least one
cycle with two or more); a camera that stops is reported stale in diagnostics (WARN) while
the others go on. For the accumulated map: frames without any robot pose are counted
(accumulated_skipped_no_pose) while the other outputs continue; the map is published in the
odom frame once poses arrive, and the same images seen from a robot moved 1 m forward put
their obstacles 1 m further along x in the odom frame (10 cells). Does not verify decay at
the node level (core test test_multicamera covers the map's arithmetic) nor speed or
accuracy (benchmarks/bench_multicamera_ros.py, bench_multicamera_grids.py).
"""

import contextlib
import dataclasses
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from panoptic_ros.core.camera_model import PinholeCamera
from panoptic_ros.core.occupancy import OccupancyProjector
from panoptic_ros.core.occupancy.fusion import fuse
from panoptic_ros.core.settings import Settings
from panoptic_ros.core.sim.rig import (render_rig_sequence, RigSequence, rig_parameters,
                                       SURROUND_SCENE)
from panoptic_ros.core.sim.taxonomy import CLASSES
from panoptic_ros.ros.parameters import ros_args

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
from ros_session import rclpy_node, spin_until  # noqa: E402 (after the rclpy check)


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp('rig') / 'surround'
    render_rig_sequence(root, 7, 3, fps=5.0, speed=0.5,
                        config=dataclasses.replace(SURROUND_SCENE, width=320, height=240))
    return RigSequence(root)


@contextlib.contextmanager
def rig_node(rig, cameras, env, tmp_path, **extra):
    params = {**rig_parameters([c for c in rig.cameras if c.name in cameras], rig.grid),
              'use_tf': False, 'cache_dir': str(tmp_path / 'cache'),
              'image_reliability': 'reliable', 'image_queue_depth': 5, **extra}
    log = open(tmp_path / 'node.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'panoptic_ros.ros.panoptic_node',
                             '--ros-args', *ros_args(params)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, params
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


class RigClient:
    """The rig's side: per-camera image and camera_info publishers, odometry, and records
    of the node's outputs ({topic: {(sec, nanosec): msg}}) and diagnostics."""

    def __init__(self, node, rig, cameras):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid, Odometry
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from panoptic_ros.msg import DetectionArray, PanopticSegmentation
        self.node, self.rig, self.cameras = node, rig, cameras
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {c: (node.create_publisher(Image, f'{c}/image', reliable),
                         node.create_publisher(CameraInfo, f'{c}/camera_info', reliable))
                     for c in cameras}
        self.odom_pub = node.create_publisher(Odometry, 'odom', reliable)
        self.outputs, self.diagnostics = {}, []
        topics = [(f'{c}/{kind}', t, reliable) for c in cameras for kind, t in
                  (('panoptic', PanopticSegmentation), ('detections', DetectionArray))]
        topics += [('occupancy', OccupancyGrid, latched),
                   ('occupancy/accumulated', OccupancyGrid, latched)]
        for topic, kind, qos in topics:
            node.create_subscription(kind, topic, lambda m, t=topic: self.outputs.setdefault(
                t, {}).setdefault((m.header.stamp.sec, m.header.stamp.nanosec), m), qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)

    def wait_for(self, proc, tmp_path, timeout=180):
        ok = spin_until(self.node, lambda: proc.poll() is not None or all(
            pub.get_subscription_count() for pub, _ in self.pubs.values()) and
            self.node.count_publishers('occupancy/accumulated'), timeout)
        assert ok and proc.poll() is None, (tmp_path / 'node.log').read_text()[-3000:]
        spin_until(self.node, lambda: False, 1.0)

    def send(self, moment, sec, cameras=None, pose=None, nanosec=0):
        """Publish frame `moment` of each camera, camera k stamped (sec, nanosec + 1000 k),
        after the robot's pose (at the first and after the last camera's stamp)."""
        from std_msgs.msg import Header
        from panoptic_ros.ros.image_codec import numpy_to_image
        from panoptic_ros.ros.messages import camera_info_msg
        from panoptic_ros.ros.sim_camera_node import odometry_msg
        if pose is not None:
            stamp = Header().stamp
            for offset in (0, 10000):
                stamp.sec, stamp.nanosec = sec, nanosec + offset
                self.odom_pub.publish(odometry_msg(stamp, 'base_link', *pose))
        for k, camera in enumerate(cameras or self.cameras):
            header = Header(frame_id=f'{camera}_optical')
            header.stamp.sec, header.stamp.nanosec = sec, nanosec + 1000 * k
            image_pub, info_pub = self.pubs[camera]
            sequence = self.rig.sequences[camera]
            info_pub.publish(camera_info_msg(sequence.camera_info, header))
            image_pub.publish(numpy_to_image(sequence.image(moment), 'rgb8', header))

    def mapped(self, sec, nanosec):
        """The accumulated map once every camera's frame of (sec, nanosec) is in it."""
        last = (sec, nanosec + 1000 * (len(self.cameras) - 1))
        maps = self.outputs.get('occupancy/accumulated', {})
        return maps.get(last) if all((sec, nanosec + 1000 * k) in self.outputs.get(
            f'{c}/panoptic', {}) for k, c in enumerate(self.cameras)) else None

    def answered(self, camera, sec):
        return all(any(key[0] == sec for key in self.outputs.get(f'{camera}/{topic}', {}))
                   for topic in ('panoptic', 'detections'))

    def counters(self):
        if not self.diagnostics:
            return {}, None
        status = self.diagnostics[-1].status[0]
        return {v.key: v.value for v in status.values}, status


def projections(rig, cameras, params):
    settings = Settings.from_params({k: v for k, v in params.items()
                                     if k not in ('cache_dir', 'image_reliability')})
    config = settings.occupancy_config([c.name for c in CLASSES], 1000)
    return {cam.name: OccupancyProjector(
        PinholeCamera.from_camera_info(rig.sequences[cam.name].camera_info),
        cam.T_base_optical, settings.grid, config, len(CLASSES) + 1)
        for cam in rig.cameras if cam.name in cameras}


@pytest.mark.parametrize('count', [2, 4])
def test_cameras_batched_fused_and_a_stopped_camera_reported(rig, count, ros_env, tmp_path):
    from panoptic_ros.ros.image_codec import image_to_numpy
    cameras = [c.name for c in rig.cameras][:count]
    with rig_node(rig, cameras, ros_env, tmp_path, camera_timeout=2.0,
                  batch_wait=1.0) as (proc, params), \
            rclpy_node(ros_env, 'rig_test') as node:
        client = RigClient(node, rig, cameras)
        client.wait_for(proc, tmp_path)
        for sec in range(100, 106):   # every camera, moment by moment
            client.send(sec % len(rig), sec)
            assert spin_until(node, lambda: all(client.answered(c, sec) for c in cameras),
                              60), (tmp_path / 'node.log').read_text()[-3000:]
        for k, camera in enumerate(cameras):
            for topic in ('panoptic', 'detections'):
                msgs = client.outputs[f'{camera}/{topic}']
                assert {key for key in msgs if key[0] >= 100} == \
                    {(sec, 1000 * k) for sec in range(100, 106)}
                assert all(m.header.frame_id == f'{camera}_optical' for m in msgs.values())
        counters, _ = client.counters()
        spin_until(node, lambda: int(client.counters()[0].get('processed', 0)) >= 6 * count,
                   10)
        counters, _ = client.counters()
        assert int(counters['network_images']) == int(counters['processed']) == 6 * count
        # one call per cycle once every camera is sending (batch_wait gathers them); the
        # first cycle may start before the later cameras have ever sent
        assert int(counters['network_calls']) <= 5 + count < 6 * count
        # each fused grid: the projections of one cycle's labels, occupied wins
        project = projections(rig, cameras, params)
        combined = 0
        for (sec, nanosec), grid_msg in client.outputs['occupancy'].items():
            if sec < 100:
                continue
            assert grid_msg.header.frame_id == 'base_link'
            grid = np.frombuffer(bytes(grid_msg.data), np.int8).reshape(
                grid_msg.info.height, grid_msg.info.width)
            own = {c: project[c](image_to_numpy(client.outputs[f'{c}/panoptic'][
                (sec, 1000 * k)].label))[0] for k, c in enumerate(cameras)}
            last = nanosec // 1000   # the cycle's newest frame is its last camera's
            subsets = [s for n in range(1, last + 2) for s in
                       itertools.combinations(cameras[:last + 1], n) if cameras[last] in s]
            match = [s for s in subsets if np.array_equal(grid, fuse([own[c] for c in s]))]
            assert match, f'fused grid at {sec}.{nanosec} is no combination of projections'
            combined += max(len(s) for s in match) > 1
        assert combined > 0
        # the last camera stops; the others go on and diagnostics name it
        for sec in range(200, 212):
            client.send(sec % len(rig), sec, cameras[:-1])
            spin_until(node, lambda: all(client.answered(c, sec) for c in cameras[:-1]), 30)
            spin_until(node, lambda: False, 0.15)
        assert spin_until(node, lambda: cameras[-1] in client.counters()[0].get(
            'stale_cameras', ''), 10)
        values, status = client.counters()
        assert status.level == status.WARN and cameras[-1] in status.message
        assert all(client.answered(c, 211) for c in cameras[:-1])
        assert proc.poll() is None


def occupied_cells(grid_msg):
    grid = np.frombuffer(bytes(grid_msg.data), np.int8).reshape(grid_msg.info.height,
                                                                grid_msg.info.width)
    i, j = np.nonzero(grid == 100)
    res = grid_msg.info.resolution
    ox, oy = grid_msg.info.origin.position.x, grid_msg.info.origin.position.y
    return set(zip(np.round(ox / res + j).astype(int).tolist(),
                   np.round(oy / res + i).astype(int).tolist()))


def jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def test_accumulated_map_needs_poses_and_moves_with_odometry(rig, ros_env, tmp_path):
    cameras = ['front', 'left']
    with rig_node(rig, cameras, ros_env, tmp_path, map_memory=0.3) as (proc, params), \
            rclpy_node(ros_env, 'rig_map_test') as node:
        client = RigClient(node, rig, cameras)
        client.wait_for(proc, tmp_path)
        for sec in range(100, 103):   # no odometry yet: no map, other outputs go on
            client.send(1, sec)
            assert spin_until(node, lambda: all(client.answered(c, sec) for c in cameras), 60)
        assert spin_until(node, lambda: int(client.counters()[0].get(
            'accumulated_skipped_no_pose', 0)) >= 6, 10)
        assert not client.outputs.get('occupancy/accumulated')
        maps = {}
        for phase, (first, x) in enumerate(((200, 0.0), (300, 1.0))):
            for k in range(8):   # the same images, robot at x, 20 frames a second
                client.send(1, first, pose=(x, 0.0, 0.0), nanosec=k * 50_000_000)
                assert spin_until(node, lambda: client.mapped(first, k * 50_000_000), 60), \
                    (tmp_path / 'node.log').read_text()[-2000:]
            maps[phase] = client.mapped(first, 7 * 50_000_000)
        assert maps[0].header.frame_id == 'odom'
        before, after = occupied_cells(maps[0]), occupied_cells(maps[1])
        assert len(before) >= 20, 'the shipped model saw no obstacle in these frames'
        moved = {(j + 10, i) for j, i in before}
        assert jaccard(moved, after) >= 0.8 > jaccard(before, after) + 0.3
        # the robot turns around: nobody sees those obstacles any more; they stay on the map
        # until map_memory (0.3 s) after their last observation, then fall below occupied
        for dt, kept in ((0.25, True), (0.35, False)):
            nanosec = 7 * 50_000_000 + int(dt * 1e9)
            client.send(1, 300, pose=(1.0, 0.0, math.pi), nanosec=nanosec)
            assert spin_until(node, lambda: client.mapped(300, nanosec), 60)
            left = len(after & occupied_cells(client.mapped(300, nanosec))) / len(after)
            assert left >= 0.8 if kept else left <= 0.05, (dt, left)
        assert proc.poll() is None
