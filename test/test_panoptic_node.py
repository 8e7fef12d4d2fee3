"""panoptic_node end to end: the node in its own process, real rclpy pub/sub over Fast DDS.

Verifies: topics, message types, encodings and sizes; the input header stamp on every output
and the image frame_id on label images, base frame on the grid; detection ids equal thing
segment ids of the panoptic message of the same stamp; the occupancy grid equals the
projection of the same panoptic labels computed here; lazy outputs (nobody subscribed ->
nothing computed, counted in diagnostics); parameter validation and a missing model file
stop the node with exit code 2 and a message naming the value or file; the demo runs end to
end in a short mode on the sim (every frame answered after the warm-up) and on a video
file. The network is an untrained checkpoint of the light architecture (accuracy is
test_shipped_model's business). Does not verify speed (benchmarks/).
"""

import subprocess
import sys

import numpy as np
import pytest

from panoptic_ros.core.camera_model import camera_info_dict, camera_pose_in_base
from panoptic_ros.core.occupancy import GridConfig, OccupancyProjector
from panoptic_ros.core.settings import Settings
from panoptic_ros.core.sim.taxonomy import default_model_config
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip('rclpy')
from ros_session import rclpy_node, spin_until  # noqa: E402 (after the rclpy check)


@pytest.fixture(scope='module')
def frame():
    return render_random_frame(104, SimConfig())


def start_node(model_path, env, tmp_path, *extra):
    return subprocess.Popen(
        [sys.executable, '-m', 'panoptic_ros.ros.panoptic_node', '--ros-args',
         '-p', f'model_path:={model_path}', '-p', 'backend:=torch', '-p', 'use_tf:=false',
         '-p', 'score_threshold:=0.05', '-p', f'cache_dir:={tmp_path / "cache"}',
         '-p', 'camera_xyz:=[0.0, 0.0, 1.2]', '-p', 'camera_rpy:=[0.0, 0.25, 0.0]', *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def ros_node(ros_env):
    with rclpy_node(ros_env, 'panoptic_node_test') as node:
        yield node


def test_outputs_stamps_ids_and_grid(model_path, frame, ros_env, ros_node, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import (DurabilityPolicy, QoSProfile, qos_profile_sensor_data,
                           ReliabilityPolicy)
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray
    from panoptic_ros.msg import ClassTable, DetectionArray, PanopticSegmentation
    from panoptic_ros.ros.image_codec import image_to_numpy, numpy_to_image
    from panoptic_ros.ros.messages import camera_info_msg

    proc = start_node(model_path, ros_env, tmp_path)
    node = ros_node
    got = {}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    diagnostics = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    node.create_subscription(ClassTable, 'class_info', lambda m: got.setdefault('class', m),
                             latched)
    try:
        assert spin_until(node, lambda: 'class' in got, 120), proc.stderr.read() \
            if proc.poll() is not None else 'no class_info'
        assert got['class'].names[0] == 'void' and got['class'].names[5] == 'car'
        # nobody subscribed yet: frames are converted, then skipped
        image_pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
        info_pub = node.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
        T = camera_pose_in_base(0.0, 0.0, 1.2, 0.0, 0.25, 0.0)
        info = camera_info_dict(frame.K, 640, 480)

        def send(sec):
            header = Header(frame_id='cam_optical')
            header.stamp.sec, header.stamp.nanosec = sec, 123
            info_pub.publish(camera_info_msg(info, header))
            image_pub.publish(numpy_to_image(frame.rgb, 'rgb8', header))

        def skipped():
            for d in diagnostics:
                for v in d.status[0].values:
                    if v.key == 'skipped_no_subscribers' and int(v.value) > 0:
                        return True
            return False
        t = 0
        while not skipped() and t < 40:
            t += 1
            send(1000 + t)
            spin_until(node, lambda: False, 0.3)
        assert skipped(), 'frames without subscribers were not skipped'
        # now subscribe to everything
        for name, topic, kind, qos in (
                ('panoptic', 'panoptic', PanopticSegmentation, reliable),
                ('semantic', 'semantic', Image, reliable),
                ('colored', 'panoptic/colored', Image, reliable),
                ('detections', 'detections', DetectionArray, reliable),
                ('markers', 'detections/markers', MarkerArray, reliable),
                ('occupancy', 'occupancy', OccupancyGrid, latched)):
            node.create_subscription(kind, topic, lambda m, n=name: got.setdefault(
                n, {}).setdefault((m.header.stamp.sec if hasattr(m, 'header') else
                                   m.markers[0].header.stamp.sec), m), qos)
        stamp = None
        for t in range(60):
            send(2000 + t)
            spin_until(node, lambda: False, 0.4)
            common = set.intersection(*(set(got.get(n, {})) for n in (
                'panoptic', 'semantic', 'colored', 'detections', 'occupancy')))
            if common:
                stamp = min(common)
                break
        assert stamp is not None, {k: len(v) for k, v in got.items() if k != 'class'}
        pan = got['panoptic'][stamp]
        assert pan.header.frame_id == 'cam_optical' and pan.header.stamp.nanosec == 123
        labels = image_to_numpy(pan.label)
        assert pan.label.encoding == '32SC1' and labels.shape == (480, 640)
        assert set(np.unique(labels).tolist()) - {0} <= {s.id for s in pan.segments}
        sem = got['semantic'][stamp]
        assert sem.encoding == 'mono8' and (sem.height, sem.width) == (480, 640)
        assert np.array_equal(image_to_numpy(sem), labels // 1000)
        col = got['colored'][stamp]
        assert col.encoding == 'rgb8' and col.header.frame_id == 'cam_optical'
        dets = got['detections'][stamp]
        assert dets.header.frame_id == 'cam_optical' and dets.base_frame_id == 'base_link'
        assert [d.instance_id for d in dets.detections] == \
            [s.id for s in pan.segments if s.is_thing]
        grid_msg = got['occupancy'][stamp]
        assert grid_msg.header.frame_id == 'base_link'
        assert grid_msg.info.width == 200 and grid_msg.info.resolution == pytest.approx(0.05)
        grid = np.frombuffer(bytes(grid_msg.data), np.int8).reshape(200, 200)
        settings = Settings.from_params({})
        projector = OccupancyProjector(frame.camera, T, GridConfig(),
                                       settings.occupancy_config(
                                           list(default_model_config().classes), 1000), 11)
        expected, ground = projector(labels)
        assert np.array_equal(grid, expected)
        for d in dets.detections:
            assert d.has_ground_position == (d.instance_id in ground)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_bad_parameter_and_missing_model_exit_2(model_path, ros_env, tmp_path):
    proc = start_node(model_path, ros_env, tmp_path, '-p', 'overlap_policy:=biggest')
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "overlap_policy='biggest'" in err
    proc = start_node(tmp_path / 'nothing.safetensors', ros_env, tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and 'nothing.safetensors does not exist' in err
    # A policy the model cannot feed: refused at start-up, naming the missing output.
    proc = start_node(model_path, ros_env, tmp_path, '-p', 'overlap_policy:=center_grouping')
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "'center_grouping' needs the network output(s) " \
        'center_heatmap' in err, err[-2000:]
    # A learned policy without its weights next to the model: refused, naming the file.
    proc = start_node(model_path, ros_env, tmp_path, '-p', 'overlap_policy:=refined')
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "'refined' needs its learned weights at" in err and \
        f'{model_path.stem}.refined.safetensors' in err, err[-2000:]


def test_demo_short_mode(model_path, tmp_path):
    # The node answers its warm-up frames before the replay starts: every frame is answered
    # on the first run, and the pictures show camera, prediction and ground truth.
    proc = subprocess.run([sys.executable, '-m', 'panoptic_ros.ros.demo', '--frames', '6',
                           '--rate', '2', '--model', str(model_path), '--backend', 'torch',
                           '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / 'out' / 'demo_report.md').read_text()
    assert '| frames answered | 6 of 6 |' in report, report
    assert '| frames matched to ground truth | 6 |' in report and '| PQ' in report, report
    assert 'detection ids are panoptic segment ids | yes' in report
    for name in ('demo_occupancy.png', 'demo_overlays.png', 'demo_animation.gif'):
        assert (tmp_path / 'out' / name).is_file(), name
    import cv2
    overlays = cv2.imread(str(tmp_path / 'out' / 'demo_overlays.png'))
    assert overlays.shape[1] > 3 * 640 * 0.6   # camera | prediction | ground truth per row


def test_demo_on_a_video_file(model_path, tmp_path):
    # Any video through camera_node -> panoptic_node: every frame answered, the overlay
    # pictures and the animation written; no ground truth, so no scores and no grid picture.
    import cv2
    video = tmp_path / 'clip.avi'
    # 2 Hz: the node keeps up even on a busy 2-core machine (at 5 Hz it can fall behind and
    # then, by design, drops the older frame, which this test would count as unanswered)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 2, (320, 240))
    for k in range(8):
        frame = np.full((240, 320, 3), 40 + 20 * k, np.uint8)
        frame[120:, :] = (60, 140, 60)
        writer.write(frame)
    writer.release()
    proc = subprocess.run([sys.executable, '-m', 'panoptic_ros.ros.demo', '--video', str(video),
                           '--model', str(model_path), '--backend', 'torch',
                           '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / 'out' / 'demo_report.md').read_text()
    assert '| frames answered | 8 of 8 |' in report and '| PQ' not in report, report
    assert (tmp_path / 'out' / 'demo_overlays.png').is_file()
    assert (tmp_path / 'out' / 'demo_animation.gif').is_file()
    assert not (tmp_path / 'out' / 'demo_occupancy.png').exists()


def test_lifecycle_transitions_and_live_parameters(model_path, frame, ros_env, ros_node,
                                                   tmp_path):
    # autostart:=false: the node waits unconfigured; each transition is requested over the
    # lifecycle services from this process, and frames are sent throughout: output only
    # while active, the model kept across deactivate, rebuilt after cleanup + configure.
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from panoptic_ros.msg import PanopticSegmentation
    from panoptic_ros.ros.image_codec import numpy_to_image

    proc = start_node(model_path, ros_env, tmp_path, '-p', 'autostart:=false')
    node = ros_node
    labels, diagnostics = [], []
    node.create_subscription(PanopticSegmentation, 'panoptic', labels.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    image_pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    clients = {kind: node.create_client(kind, f'/panoptic_node/{name}') for kind, name in (
        (GetState, 'get_state'), (ChangeState, 'change_state'),
        (SetParameters, 'set_parameters'), (GetParameters, 'get_parameters'))}

    def call(kind, request):
        assert spin_until(node, clients[kind].service_is_ready, 120), proc.poll()
        future = clients[kind].call_async(request)
        assert spin_until(node, future.done, 60)
        return future.result()

    def state():
        return call(GetState, GetState.Request()).current_state.label

    def transition(transition_id):
        return call(ChangeState, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def send_for(seconds, until=lambda: False):
        end, stamp = node.get_clock().now().nanoseconds + seconds * 1e9, 0
        while node.get_clock().now().nanoseconds < end and not until():
            stamp += 1
            header = Header(frame_id='cam_optical')
            header.stamp.sec = stamp
            image_pub.publish(numpy_to_image(frame.rgb, 'rgb8', header))
            spin_until(node, lambda: False, 0.25)
        return until()

    def counter(name):
        for d in reversed(diagnostics):
            for v in d.status[0].values:
                if v.key == name:
                    return int(v.value)
        return 0

    try:
        assert state() == 'unconfigured'
        send_for(2.0)
        assert not labels
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == 'inactive'
        assert not send_for(4.0, lambda: counter('skipped_inactive') > 0 and labels)
        assert not labels and counter('skipped_inactive') > 0
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == 'active'
        assert send_for(120.0, lambda: labels), 'no labels while active'
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == 'inactive'
        spin_until(node, lambda: False, 1.0)   # a frame in flight may still arrive
        labels.clear()
        send_for(3.0)
        assert not labels, 'labels while inactive'
        assert transition(Transition.TRANSITION_CLEANUP) and state() == 'unconfigured'
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == 'inactive'
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == 'active'
        assert send_for(120.0, lambda: labels), 'no labels after cleanup and configure'

        def set_parameter(name, value):
            return call(SetParameters, SetParameters.Request(parameters=[
                Parameter(name, value=value).to_parameter_msg()])).results[0]
        accepted = set_parameter('score_threshold', 0.5)
        assert accepted.successful, accepted.reason
        value = call(GetParameters, GetParameters.Request(names=['score_threshold']))
        assert value.values[0].double_value == pytest.approx(0.5)
        rejected = set_parameter('score_threshold', 1.5)
        assert not rejected.successful and 'score_threshold' in rejected.reason
        rejected = set_parameter('overlap_policy', 'biggest')
        assert not rejected.successful and 'overlap_policy' in rejected.reason
        rejected = set_parameter('overlap_policy', 'center_grouping')   # the light model
        assert not rejected.successful and 'center_heatmap' in rejected.reason, rejected.reason
        rejected = set_parameter('overlap_policy', 'spatial_ranking')   # no weights
        assert not rejected.successful and 'learned weights' in rejected.reason, \
            rejected.reason
        assert set_parameter('overlap_policy', 'smallest_first').successful
        labels.clear()
        assert send_for(60.0, lambda: labels), 'no labels after a live change'
        read_only = set_parameter('model_path', str(tmp_path / 'other.safetensors'))
        assert not read_only.successful and 'read-only' in read_only.reason
    finally:
        proc.terminate()
        proc.wait(timeout=20)
