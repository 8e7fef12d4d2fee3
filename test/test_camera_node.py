"""camera_node across processes: an image folder and a calibration YAML, real rclpy.

Verifies: the images of a folder arrive in name order as rgb8 with the file's pixels and the
configured frame_id; camera_info carries the calibration's K and D with the image's stamp;
a video file is read too; without a calibration a pinhole guess is published with a warning;
a missing source and a calibration without camera_matrix stop the node with exit code 2 and
a message naming them; the first-frame gate (wait_for_subscribers) opens only after the
subscribers have been matched for its settle time. Does not verify USB devices (none here)
or the publishing rate.
"""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip('rclpy')
from ros_session import rclpy_node, spin_until  # noqa: E402 (after the rclpy check)

NODE = [sys.executable, '-m', 'panoptic_ros.ros.camera_node', '--ros-args']
K = [200.0, 0.0, 79.5, 0.0, 210.0, 59.5, 0.0, 0.0, 1.0]
D = [-0.1, 0.01, 0.0, 0.0, 0.0]


def write_folder(folder):
    folder.mkdir()
    images = []
    for k in range(3):
        rgb = np.zeros((120, 160, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 40 * k + 10, 7, 200 - 30 * k
        rgb[k * 10:k * 10 + 5, :, 1] = 255   # a band that tells the frames apart
        cv2.imwrite(str(folder / f'frame_{k:03d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(rgb)
    return images


def write_calibration(path, **drop):
    data = {'image_width': 160, 'image_height': 120, 'camera_name': 'test',
            'camera_matrix': {'rows': 3, 'cols': 3, 'data': K},
            'distortion_model': 'plumb_bob',
            'distortion_coefficients': {'rows': 1, 'cols': 5, 'data': D}}
    for key in drop:
        data.pop(key)
    path.write_text(yaml.safe_dump(data))
    return path


def receive(env, args, count, timeout=60):
    """Start camera_node with args; collect `count` images and camera_infos; kill it."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    images, infos = [], []
    with rclpy_node(env, 'camera_node_test') as node:
        node.create_subscription(Image, 'image', images.append, qos_profile_sensor_data)
        node.create_subscription(CameraInfo, 'camera_info', infos.append,
                                 qos_profile_sensor_data)
        proc = subprocess.Popen(NODE + args, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            spin_until(node, lambda: len(images) >= count or proc.poll() is not None,
                       timeout)
        finally:
            proc.kill()
            log = proc.communicate()[0]
    return images, infos, log


def test_folder_with_calibration(tmp_path, ros_env):
    from panoptic_ros.ros.image_codec import image_to_numpy
    expected = write_folder(tmp_path / 'frames')
    calibration = write_calibration(tmp_path / 'camera.yaml')
    images, infos, log = receive(ros_env, [
        '-p', f'source:={tmp_path / "frames"}', '-p', f'calibration_file:={calibration}',
        '-p', 'rate:=20.0', '-p', 'frame_id:=test_optical', '-p', 'loop:=true'], 6)
    assert len(images) >= 6, log
    stamps = {(i.header.stamp.sec, i.header.stamp.nanosec) for i in infos}
    for msg in images:
        assert msg.encoding == 'rgb8' and (msg.width, msg.height) == (160, 120)
        assert msg.header.frame_id == 'test_optical'
    # each image's camera_info has its stamp (the last one may still be in flight)
    image_stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in images]
    assert all(s in stamps for s in image_stamps[:-1]), (image_stamps, sorted(stamps))
    # frames in name order, with the files' pixels, looping
    order = [next(k for k, e in enumerate(expected) if np.array_equal(image_to_numpy(m), e))
             for m in images]
    assert all((b - a) % 3 == 1 for a, b in zip(order, order[1:])), order
    info = infos[0]
    assert list(info.k) == K and list(info.d) == D and info.header.frame_id == 'test_optical'
    assert (info.width, info.height) == (160, 120)


def test_video_file_without_calibration_guesses_a_pinhole(tmp_path, ros_env):
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (160, 120))
    assert writer.isOpened()
    for k in range(5):
        writer.write(np.full((120, 160, 3), 50 * k, np.uint8))
    writer.release()
    images, infos, log = receive(ros_env, ['-p', f'source:={video}', '-p', 'rate:=20.0',
                                           '-p', 'fallback_fov_deg:=60.0'], 3)
    assert len(images) >= 3, log
    assert 'no calibration_file: publishing a pinhole guess' in log
    fy = 60.0 / np.tan(np.radians(30.0))   # (height / 2) / tan(fov / 2)
    assert infos and infos[0].k[4] == pytest.approx(fy)


def test_bad_source_and_calibration_exit_2(tmp_path, ros_env):
    result = subprocess.run(NODE + ['-p', f'source:={tmp_path / "nowhere"}'], env=ros_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'nowhere' in result.stderr
    write_folder(tmp_path / 'frames')
    bad = write_calibration(tmp_path / 'bad.yaml', camera_matrix=None)
    result = subprocess.run(NODE + ['-p', f'source:={tmp_path / "frames"}',
                                    '-p', f'calibration_file:={bad}'], env=ros_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'bad.yaml' in result.stderr and 'camera_matrix' in result.stderr


def test_first_frame_gate_waits_until_subscribers_have_settled(ros_env):
    # The first frame goes once the publishers have had their subscribers for `settle`
    # seconds (both ends of a DDS match then know each other), and not while one is missing.
    from sensor_msgs.msg import CameraInfo, Image
    from panoptic_ros.ros.runner import FirstFrameGate
    with rclpy_node(ros_env, 'gate_test') as node:
        image_pub = node.create_publisher(Image, 'gate/image', 1)
        info_pub = node.create_publisher(CameraInfo, 'gate/camera_info', 1)
        gate = FirstFrameGate(1, settle=0.5)
        assert not gate(image_pub, [info_pub], now=0.0)
        node.create_subscription(Image, 'gate/image', lambda msg: None, 1)
        info_sub = node.create_subscription(CameraInfo, 'gate/camera_info', lambda msg: None, 1)
        assert spin_until(node, lambda: image_pub.get_subscription_count() == 1
                          and info_pub.get_subscription_count() == 1, 20)
        assert not gate(image_pub, [info_pub], now=1.0)     # matched: the wait starts
        assert not gate(image_pub, [info_pub], now=1.4)
        assert gate(image_pub, [info_pub], now=1.5)
        node.destroy_subscription(info_sub)
        assert spin_until(node, lambda: info_pub.get_subscription_count() == 0, 20)
        assert not gate(image_pub, [info_pub], now=2.0)     # camera_info lost its subscriber
        assert FirstFrameGate(0)(image_pub, [info_pub])     # 0: never waits
