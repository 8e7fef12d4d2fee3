"""camera_node: a camera driver for users without one, on OpenCV.

Source (parameter `source`): a device index ('0'), a video file, or a folder of images
(sorted by name). Publishes `image` (rgb8, sensor-data QoS) and `camera_info` (from the
calibration YAML of camera_calibration / camera_info_manager: image_width, image_height,
camera_matrix, distortion_model, distortion_coefficients, rectification_matrix,
projection_matrix; without one, a pinhole guess from `fallback_fov_deg` is published and a
warning logged). Stamps are the capture time; frame_id is `frame_id`. With
`wait_for_subscribers` N > 0 the first frame waits until `image` has had N subscribers
for half a second.
"""

from pathlib import Path
import sys

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
import yaml

from panoptic_ros.core.camera_model import camera_info_dict, intrinsics_from_fov
from panoptic_ros.core.settings import Spec
from panoptic_ros.ros.image_codec import numpy_to_image
from panoptic_ros.ros.messages import camera_info_msg
from panoptic_ros.ros.parameters import BadParameter, declare_parameters
from panoptic_ros.ros.runner import FirstFrameGate, run_node

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')
PARAMETERS = {
    'source': Spec('0', 'device index, video file or image folder'),
    'rate': Spec(30.0, 'publishing rate in Hz for folders and files; devices run free',
                 low=0.0, high=1000.0, low_open=True),
    'loop': Spec(True, 'restart a file or folder at its end'),
    'frame_id': Spec('camera_optical', 'frame_id of the images (camera optical frame)'),
    'calibration_file': Spec('', 'camera_calibration YAML; empty = pinhole guess'),
    'fallback_fov_deg': Spec(60.0, 'vertical field of view of the pinhole guess (degrees)',
                             low=1.0, high=179.0),
    'wait_for_subscribers': Spec(0, 'hold the first frame until `image` has had this many '
                                    'subscribers and camera_info one for 0.5 s (no frame '
                                    'of a file lost to discovery); 0: do not wait', low=0,
                                 high=100),
}


def load_calibration(path):
    """camera_info dict from a camera_calibration YAML; ValueError names the problem."""
    data = yaml.safe_load(Path(path).read_text())
    try:
        info = {'width': int(data['image_width']), 'height': int(data['image_height']),
                'distortion_model': data.get('distortion_model', 'plumb_bob'),
                'd': [float(v) for v in data['distortion_coefficients']['data']],
                'k': [float(v) for v in data['camera_matrix']['data']]}
        info['r'] = [float(v) for v in data.get('rectification_matrix', {}).get(
            'data', [1, 0, 0, 0, 1, 0, 0, 0, 1])]
        k = np.asarray(info['k']).reshape(3, 3)
        p = np.zeros((3, 4))
        p[:3, :3] = k
        info['p'] = [float(v) for v in data.get('projection_matrix', {}).get(
            'data', p.ravel().tolist())]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'calibration file {path}: missing or bad field {exc}') from exc
    if len(info['k']) != 9:
        raise ValueError(f'calibration file {path}: camera_matrix needs 9 values')
    return info


class SourceError(ValueError):
    """The camera source cannot be opened (printed as the program's one error line)."""


class FrameSource:
    """Frames (RGB uint8) from a device, a video file or an image folder."""

    def __init__(self, source, loop):
        self.loop = loop
        self.files = None
        path = Path(source)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SourceError(f'image folder {source} holds no images')
            self.index = 0
            self.is_device = False
            return
        self.is_device = source.isdigit()
        if not self.is_device and not path.is_file():
            raise SourceError(f'source {source!r} is neither a device index, a file nor a '
                              'folder')
        self.capture = cv2.VideoCapture(int(source) if self.is_device else str(path))
        if not self.capture.isOpened():
            if self.is_device:
                raise SourceError(f'cannot open device {source} (/dev/video{source}): no '
                                  'camera there, or no permission to read it')
            raise SourceError(f'OpenCV cannot open source {source!r}')

    def read(self):
        """Next RGB frame, or None at the end (when not looping)."""
        if self.files is not None:
            if self.index >= len(self.files):
                if not self.loop:
                    return None
                self.index = 0
            bgr = cv2.imread(str(self.files[self.index]), cv2.IMREAD_COLOR)
            self.index += 1
            return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        ok, bgr = self.capture.read()
        if not ok and self.loop and not self.is_device:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None


class CameraNode(Node):
    def __init__(self):
        super().__init__('camera')
        self.p = p = declare_parameters(self, PARAMETERS)
        self.source = FrameSource(str(p['source']), p['loop'])
        try:
            self.calibration = load_calibration(p['calibration_file']) \
                if p['calibration_file'] else None
        except ValueError as exc:
            raise BadParameter(str(exc), 'calibration_file') from exc
        if self.calibration is None:
            self.get_logger().warning('no calibration_file: publishing a pinhole guess '
                                      f"({p['fallback_fov_deg']} deg vertical FOV)")
        self.image_pub = self.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
        self.finished = False
        self.published = 0
        self.first_frame_gate = FirstFrameGate(p['wait_for_subscribers'])
        self.create_timer(1.0 / p['rate'], self.tick)

    def tick(self):
        if self.published == 0 and not self.first_frame_gate(self.image_pub, [self.info_pub]):
            self.get_logger().info('waiting for subscribers', throttle_duration_sec=5.0)
            return
        rgb = self.source.read()
        if rgb is None:
            self.get_logger().info('source finished')
            self.finished = True
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.p['frame_id'])
        info = self.calibration
        h, w = rgb.shape[:2]
        if info is None or (info['width'], info['height']) != (w, h):
            if info is not None:
                self.get_logger().warning(f"calibration is {info['width']}x{info['height']}, "
                                          f'frames are {w}x{h}: pinhole guess used',
                                          throttle_duration_sec=30.0)
            info = camera_info_dict(intrinsics_from_fov(w, h, self.p['fallback_fov_deg']), w, h)
        self.image_pub.publish(numpy_to_image(rgb, 'rgb8', header))
        self.info_pub.publish(camera_info_msg(info, header))
        self.published += 1


def main(args=None):
    return run_node(CameraNode, 'camera_node', args, (SourceError,))


if __name__ == '__main__':
    sys.exit(main())
