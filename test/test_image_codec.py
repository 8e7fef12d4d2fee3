"""Image conversion between sensor_msgs/Image, CompressedImage and numpy (cv_bridge semantics).

Verifies: round trip of every supported encoding with and without row padding, big-endian
16-bit images, decoding as a zero-copy view, conversions between colour encodings (against
OpenCV), compressed images, and that every malformed message raises ValueError naming the
problem. Uses real sensor_msgs message classes; no ROS graph needed.
"""

import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from panoptic_ros.ros.image_codec import (
    compressed_to_numpy, encoding_layout, image_to_numpy, numpy_to_compressed, numpy_to_image)

pytestmark = pytest.mark.pure

ENCODINGS = ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '8UC1', '8UC3', '16UC1',
             '32SC1', '32FC1', 'yuv422', 'yuv422_yuy2']
HOST_BIG = sys.byteorder == 'big'


def random_array(encoding, height=5, width=7, seed=0):
    dtype, channels = encoding_layout(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype.kind == 'f':
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def padded_message(array, encoding, pad, big_endian=HOST_BIG):
    """An Image whose rows carry `pad` extra bytes of garbage (as some drivers send)."""
    dtype, channels = encoding_layout(encoding)
    height, width = array.shape[:2]
    row = width * channels * dtype.itemsize
    stored = array.astype(dtype.newbyteorder('>' if big_endian else '<'))
    raw = np.frombuffer(stored.tobytes(), np.uint8).reshape(height, row)
    garbage = np.full((height, pad), 0xAB, np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=big_endian,
                step=row + pad)
    msg.data = np.concatenate([raw, garbage], axis=1).tobytes()
    return msg


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_round_trip_unpadded(encoding):
    array = random_array(encoding)
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(array, encoding, header=header)
    assert msg.encoding == encoding and msg.header.frame_id == 'camera_optical'
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 345
    assert msg.step == array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3
                                                          else 1)
    decoded = image_to_numpy(msg)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize('encoding', ENCODINGS)
@pytest.mark.parametrize('pad', [1, 3, 16])
def test_round_trip_padded_rows(encoding, pad):
    dtype, _ = encoding_layout(encoding)
    pad = pad * dtype.itemsize  # a step must stay a multiple of the element size
    array = random_array(encoding, seed=pad)
    decoded = image_to_numpy(padded_message(array, encoding, pad))
    np.testing.assert_array_equal(decoded, array)
    # Re-encoding drops the padding.
    again = numpy_to_image(decoded, encoding)
    assert again.step == len(again.data) // again.height
    np.testing.assert_array_equal(image_to_numpy(again), array)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('pad', [0, 4])
def test_big_endian_16_bit(encoding, pad):
    array = random_array(encoding, seed=3)
    msg = padded_message(array, encoding, pad, big_endian=True)
    assert msg.is_bigendian
    decoded = image_to_numpy(msg)
    assert decoded.dtype == np.dtype(np.uint16)  # native order
    np.testing.assert_array_equal(decoded, array)
    # And the bytes really were big-endian: the first pixel's high byte comes first.
    assert msg.data[0] == int(array[0, 0]) >> 8


def test_decoding_is_a_view_when_layout_allows():
    array = random_array('bgr8', 48, 64)
    msg = padded_message(array, 'bgr8', 8)
    decoded = image_to_numpy(msg)
    assert not decoded.flags.owndata and not decoded.flags.writeable
    assert np.shares_memory(decoded, np.frombuffer(memoryview(msg.data), np.uint8))


@pytest.mark.parametrize('src,dst,code', [
    ('bgr8', 'rgb8', cv2.COLOR_BGR2RGB), ('rgb8', 'bgr8', cv2.COLOR_RGB2BGR),
    ('bgra8', 'bgr8', cv2.COLOR_BGRA2BGR), ('rgba8', 'mono8', cv2.COLOR_RGBA2GRAY),
    ('mono8', 'bgr8', cv2.COLOR_GRAY2BGR), ('bgr8', 'mono8', cv2.COLOR_BGR2GRAY),
])
def test_desired_encoding_colour_conversion(src, dst, code):
    array = random_array(src, 6, 8)
    got = image_to_numpy(numpy_to_image(array, src), desired_encoding=dst)
    np.testing.assert_array_equal(got, cv2.cvtColor(array, code))


@pytest.mark.parametrize('src,code', [('yuv422', cv2.COLOR_YUV2BGR_UYVY),
                                      ('yuv422_yuy2', cv2.COLOR_YUV2BGR_YUY2)])
def test_yuv422_to_bgr8(src, code):
    array = random_array(src, 6, 8)
    got = image_to_numpy(padded_message(array, src, 4), desired_encoding='bgr8')
    np.testing.assert_array_equal(got, cv2.cvtColor(array, code))


def test_bit_depth_scaling_as_cv_bridge():
    mono16 = np.array([[0, 257, 65535]], np.uint16)
    got = image_to_numpy(numpy_to_image(mono16, 'mono16'), desired_encoding='mono8')
    np.testing.assert_array_equal(got, [[0, 1, 255]])
    mono8 = np.array([[0, 1, 255]], np.uint8)
    got = image_to_numpy(numpy_to_image(mono8, 'mono8'), desired_encoding='mono16')
    np.testing.assert_array_equal(got, [[0, 257, 65535]])


def test_passthrough_names_generic_encoding():
    assert numpy_to_image(np.zeros((2, 3), np.int32)).encoding == '32SC1'
    assert numpy_to_image(np.zeros((2, 3, 3), np.uint8)).encoding == '8UC3'
    assert numpy_to_image(np.zeros((2, 3), np.float32)).encoding == '32FC1'


def test_compressed_round_trip():
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[:, :24] = (255, 0, 0)
    msg = numpy_to_compressed(bgr, 'png', header=Header(frame_id='cam'))
    assert isinstance(msg, CompressedImage) and msg.header.frame_id == 'cam'
    np.testing.assert_array_equal(compressed_to_numpy(msg), bgr)
    np.testing.assert_array_equal(compressed_to_numpy(msg, 'rgb8'), bgr[..., ::-1])
    jpeg = compressed_to_numpy(numpy_to_compressed(bgr, 'jpeg'))
    assert jpeg.shape == bgr.shape and np.abs(jpeg.astype(int) - bgr).mean() < 3


def test_malformed_compressed_raises():
    with pytest.raises(ValueError, match='cannot decode'):
        compressed_to_numpy(CompressedImage(format='jpeg', data=b'not a jpeg'))
    with pytest.raises(ValueError, match='cannot decode'):
        compressed_to_numpy(CompressedImage(format='jpeg', data=b''))


def good_message():
    return numpy_to_image(random_array('bgr8', 4, 6), 'bgr8')


@pytest.mark.parametrize('mutate,match', [
    (lambda m: setattr(m, 'encoding', 'bayer_xyz9'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'encoding', ''), 'unsupported image encoding'),
    (lambda m: setattr(m, 'height', 0), 'zero size'),
    (lambda m: setattr(m, 'width', 0), 'zero size'),
    (lambda m: setattr(m, 'step', 17), 'step 17 is smaller'),
    (lambda m: setattr(m, 'step', 19), 'expected step 19'),
    (lambda m: setattr(m, 'height', 5), 'expected step 18 x height 5'),
    (lambda m: setattr(m, 'width', 7), 'step 18 is smaller'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:-1]), 'has 71 bytes'),
    (lambda m: setattr(m, 'data', bytes(m.data) + b'x'), 'has 73 bytes'),
    (lambda m: setattr(m, 'encoding', 'rgba8'), 'step 18 is smaller than width 6 x 4'),
])
def test_malformed_image_raises(mutate, match):
    msg = good_message()
    mutate(msg)
    with pytest.raises(ValueError, match=match):
        image_to_numpy(msg)


def test_odd_step_for_16_bit_raises():
    msg = numpy_to_image(np.zeros((2, 3), np.uint16), 'mono16')
    msg.step, msg.data = 7, bytes(14)
    with pytest.raises(ValueError, match='not a multiple'):
        image_to_numpy(msg)


def test_unsupported_conversions_raise():
    msg = numpy_to_image(np.zeros((2, 3), np.float32), '32FC1')
    with pytest.raises(ValueError, match='cannot convert from'):
        image_to_numpy(msg, desired_encoding='bgr8')
    with pytest.raises(ValueError, match='cannot convert to'):
        image_to_numpy(good_message(), desired_encoding='32FC1')


def test_encode_mismatch_raises():
    with pytest.raises(ValueError, match='needs dtype'):
        numpy_to_image(np.zeros((2, 3), np.uint8), 'bgr8')
    with pytest.raises(ValueError, match='needs dtype'):
        numpy_to_image(np.zeros((2, 3, 3), np.float32), 'rgb8')
    with pytest.raises(ValueError, match=r'\(H, W\) or \(H, W, C\)'):
        numpy_to_image(np.zeros(5, np.uint8), 'mono8')
