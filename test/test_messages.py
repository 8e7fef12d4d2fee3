"""The generated panoptic_ros messages import, carry their fields and serialize.

Verifies: every message type builds from msg/*.msg, round-trips through rclpy's CDR
serialization with nested types and arrays intact. Does not verify: transport (see
test_cross_process.py).
"""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from panoptic_ros.msg import ClassTable, Detection, DetectionArray, PanopticSegmentation, Segment
from panoptic_ros.ros.image_codec import image_to_numpy, numpy_to_image

pytestmark = pytest.mark.pure


def round_trip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def test_panoptic_segmentation_round_trip():
    label = np.array([[0, 1000, 2001], [2001, 2002, 0]], np.int32)
    msg = PanopticSegmentation(label_divisor=1000)
    msg.header.frame_id = 'camera_optical'
    msg.header.stamp.sec = 42
    msg.label = numpy_to_image(label, '32SC1', header=msg.header)
    msg.segments = [
        Segment(id=1000, category_id=1, is_thing=False, score=0.5, area=1,
                x1=1.0, y1=0.0, x2=2.0, y2=1.0),
        Segment(id=2001, category_id=2, is_thing=True, score=0.9, area=2,
                x1=0.0, y1=0.0, x2=3.0, y2=2.0),
    ]
    got = round_trip(msg)
    assert got.header.frame_id == 'camera_optical' and got.header.stamp.sec == 42
    assert got.label_divisor == 1000
    np.testing.assert_array_equal(image_to_numpy(got.label), label)
    assert [(s.id, s.category_id, s.is_thing, s.area) for s in got.segments] == \
        [(1000, 1, False, 1), (2001, 2, True, 2)]
    assert abs(got.segments[1].score - 0.9) < 1e-6 and got.segments[1].x2 == 3.0


def test_detection_array_round_trip():
    msg = DetectionArray(base_frame_id='base_link')
    msg.header.frame_id = 'camera_optical'
    msg.detections = [Detection(instance_id=2001, class_id=2, class_name='car', score=0.75,
                                x1=10.0, y1=20.0, x2=30.0, y2=40.0, has_ground_position=True,
                                ground_x=3.5, ground_y=-1.25)]
    got = round_trip(msg)
    det = got.detections[0]
    assert got.base_frame_id == 'base_link'
    assert (det.instance_id, det.class_id, det.class_name) == (2001, 2, 'car')
    assert det.has_ground_position and (det.ground_x, det.ground_y) == (3.5, -1.25)


def test_class_table_round_trip():
    msg = ClassTable(names=['void', 'road', 'car'], is_thing=[False, False, True],
                     r=[0, 128, 0], g=[0, 64, 0], b=[0, 128, 142], label_divisor=1000)
    got = round_trip(msg)
    assert list(got.names) == ['void', 'road', 'car']
    assert list(got.is_thing) == [False, False, True]
    assert list(got.b) == [0, 128, 142] and got.label_divisor == 1000
