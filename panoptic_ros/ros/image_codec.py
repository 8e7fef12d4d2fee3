"""Conversion between sensor_msgs/Image, sensor_msgs/CompressedImage and numpy arrays.

A replacement for cv_bridge (the PyPI ``cv-bridge`` is a ROS 1 port that breaks with numpy 2),
with the same semantics, so code written for cv_bridge behaves the same:

- ``image_to_numpy(msg, "passthrough")`` returns an array of the message's own layout:
  (H, W) for one channel, (H, W, C) otherwise; dtype from the encoding; native byte order.
  When the layout allows (native byte order) the array is a read-only *view* of ``msg.data``
  with row padding skipped through strides, not a copy.
- A ``desired_encoding`` other than passthrough converts between the colour and mono
  encodings (rgb8, bgr8, rgba8, bgra8, mono8, mono16, rgb16, bgr16, rgba16, bgra16, and from
  yuv422 / yuv422_yuy2), scaling by 255/65535 or 65535/255 when the bit depth changes, as
  cv_bridge does.
- ``numpy_to_image(array, encoding)`` builds an Image with ``step = width * bytes per pixel``,
  ``is_bigendian`` of this machine, and the header given.

Malformed messages (unknown encoding, sizes that disagree with the data) raise ``ValueError``
with a message that names the problem. This module is the ROS layer's only image conversion.
"""

import re
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (numpy dtype, channels) for the named encodings of sensor_msgs/image_encodings.h.
_NAMED = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4), 'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
    'rgb16': (np.uint16, 3), 'bgr16': (np.uint16, 3),
    'rgba16': (np.uint16, 4), 'bgra16': (np.uint16, 4),
    # Packed 4:2:2: two bytes per pixel, (U|V, Y) for UYVY and (Y, U|V) for YUY2.
    'yuv422': (np.uint8, 2), 'yuv422_yuy2': (np.uint8, 2),
}
# Generic OpenCV-style encodings, e.g. 8UC1, 16UC1, 32SC1, 32FC1, 64FC3.
_GENERIC = re.compile(r'^(8U|8S|16U|16S|32S|32F|64F)C([1-9][0-9]*)$')
_GENERIC_DTYPES = {
    '8U': np.uint8, '8S': np.int8, '16U': np.uint16, '16S': np.int16,
    '32S': np.int32, '32F': np.float32, '64F': np.float64,
}
# Colour layout of the encodings that desired_encoding may convert between.
_COLOR_ORDER = {
    'mono8': 'GRAY', 'mono16': 'GRAY', 'rgb8': 'RGB', 'bgr8': 'BGR', 'rgba8': 'RGBA',
    'bgra8': 'BGRA', 'rgb16': 'RGB', 'bgr16': 'BGR', 'rgba16': 'RGBA', 'bgra16': 'BGRA',
}
_YUV_TO = {
    ('yuv422', 'BGR'): cv2.COLOR_YUV2BGR_UYVY, ('yuv422', 'RGB'): cv2.COLOR_YUV2RGB_UYVY,
    ('yuv422', 'BGRA'): cv2.COLOR_YUV2BGRA_UYVY, ('yuv422', 'RGBA'): cv2.COLOR_YUV2RGBA_UYVY,
    ('yuv422', 'GRAY'): cv2.COLOR_YUV2GRAY_UYVY,
    ('yuv422_yuy2', 'BGR'): cv2.COLOR_YUV2BGR_YUY2, ('yuv422_yuy2', 'RGB'): cv2.COLOR_YUV2RGB_YUY2,
    ('yuv422_yuy2', 'BGRA'): cv2.COLOR_YUV2BGRA_YUY2,
    ('yuv422_yuy2', 'RGBA'): cv2.COLOR_YUV2RGBA_YUY2,
    ('yuv422_yuy2', 'GRAY'): cv2.COLOR_YUV2GRAY_YUY2,
}
_HOST_BIG_ENDIAN = sys.byteorder == 'big'


class ImageFormatError(ValueError):
    """A malformed image message. ``reason`` is one of REASONS, for counters."""

    REASONS = ('encoding', 'zero_size', 'step', 'data_length', 'decode')

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def encoding_layout(encoding):
    """Return (numpy dtype, channels) of an image encoding; ValueError if unknown."""
    if encoding in _NAMED:
        dtype, channels = _NAMED[encoding]
        return np.dtype(dtype), channels
    match = _GENERIC.match(encoding or '')
    if match is None:
        raise ImageFormatError('encoding', f'unsupported image encoding {encoding!r}')
    return np.dtype(_GENERIC_DTYPES[match.group(1)]), int(match.group(2))


def _check_layout(height, width, step, data_len, encoding):
    """Validate the size fields of an Image; returns (dtype, channels, bytes per row)."""
    dtype, channels = encoding_layout(encoding)
    if height <= 0 or width <= 0:
        raise ImageFormatError('zero_size', f'image has zero size ({width}x{height}, '
                                            f'encoding {encoding})')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(
            'step', f'image step {step} is smaller than width {width} x {channels} channels x '
            f'{dtype.itemsize} bytes = {row_bytes} (encoding {encoding})')
    if step % dtype.itemsize:
        raise ImageFormatError('step', f'image step {step} is not a multiple of the '
                                       f'{dtype.itemsize}-byte element size of encoding '
                                       f'{encoding}')
    if data_len != step * height:
        raise ImageFormatError('data_length', f'image data has {data_len} bytes, expected '
                                              f'step {step} x height {height} = '
                                              f'{step * height}')
    return dtype, channels, row_bytes


def check_image(msg, desired_encoding='passthrough'):
    """Validate an Image's encoding and size fields without touching its pixels.

    Cheap enough for a subscription callback. Raises ImageFormatError (its ``reason`` names
    the defect) when image_to_numpy(msg, desired_encoding) would fail on the layout.
    """
    _check_layout(int(msg.height), int(msg.width), int(msg.step), len(msg.data), msg.encoding)
    if desired_encoding not in ('passthrough', msg.encoding):
        _check_convertible(msg.encoding, desired_encoding)


def image_to_numpy(msg, desired_encoding='passthrough'):
    """Decode a sensor_msgs/Image into an (H, W) or (H, W, C) numpy array.

    Args:
        msg: sensor_msgs/Image.
        desired_encoding: 'passthrough' for the message's own layout, or a colour / mono
            encoding to convert to (see module docstring).
    Returns:
        numpy array in native byte order; a read-only view of msg.data when no byte swap
        and no conversion is needed.
    Raises:
        ValueError: unknown encoding, inconsistent height / width / step / data length, or a
            conversion that cv_bridge does not do either.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buf = memoryview(msg.data).cast('B') if not isinstance(msg.data, (bytes, bytearray)) \
        else memoryview(msg.data)
    dtype, channels, _ = _check_layout(height, width, step, buf.nbytes, msg.encoding)
    source_dtype = dtype.newbyteorder('>' if msg.is_bigendian else '<') \
        if dtype.itemsize > 1 else dtype
    shape = (height, width, channels)
    strides = (step, channels * dtype.itemsize, dtype.itemsize)
    array = np.ndarray(shape, dtype=source_dtype, buffer=buf, strides=strides)
    if bool(msg.is_bigendian) != _HOST_BIG_ENDIAN and dtype.itemsize > 1:
        array = array.astype(dtype)  # byte swap into native order (a copy)
    else:
        array.flags.writeable = False
    if channels == 1:
        array = array[:, :, 0]
    if desired_encoding in ('passthrough', msg.encoding):
        return array
    return convert_encoding(array, msg.encoding, desired_encoding)


def _check_convertible(src_encoding, dst_encoding):
    """The colour order of dst_encoding, if convert_encoding can convert src to it.

    Raises ValueError for a target that is not a colour / mono encoding, ImageFormatError
    ('encoding') for an unknown source or one without a colour meaning (e.g. 32FC1, 8UC3).
    """
    dst_order = _COLOR_ORDER.get(dst_encoding)
    if dst_order is None:
        raise ValueError(f'cannot convert to encoding {dst_encoding!r}: only '
                         f'{sorted(_COLOR_ORDER)} are conversion targets')
    encoding_layout(src_encoding)
    if src_encoding not in _COLOR_ORDER and src_encoding not in ('yuv422', 'yuv422_yuy2'):
        raise ImageFormatError('encoding', f'cannot convert from encoding '
                                           f'{src_encoding!r} to {dst_encoding!r}')
    return dst_order


def convert_encoding(array, src_encoding, dst_encoding):
    """Convert an array between colour / mono encodings as cv_bridge's cvtColor does."""
    if src_encoding == dst_encoding:
        return array
    dst_order = _check_convertible(src_encoding, dst_encoding)
    src_dtype, _ = encoding_layout(src_encoding)
    dst_dtype, _ = encoding_layout(dst_encoding)
    if src_encoding in ('yuv422', 'yuv422_yuy2'):
        array = cv2.cvtColor(np.ascontiguousarray(array),
                             _YUV_TO[(src_encoding, dst_order)])
    else:
        src_order = _COLOR_ORDER[src_encoding]
        if src_order != dst_order:
            code = getattr(cv2, f'COLOR_{src_order}2{dst_order}')
            array = cv2.cvtColor(np.ascontiguousarray(array), code)
    if src_dtype != dst_dtype:
        scale = {(1, 2): 65535.0 / 255.0, (2, 1): 255.0 / 65535.0}[
            (src_dtype.itemsize, dst_dtype.itemsize)]
        array = (array.astype(np.float32) * scale + 0.5).astype(dst_dtype)
    return array


def numpy_to_image(array, encoding='passthrough', header=None):
    """Encode an (H, W) or (H, W, C) array as a sensor_msgs/Image.

    Args:
        array: numpy array; its dtype and channels must match ``encoding``.
        encoding: an image encoding, or 'passthrough' to name it from the array
            (e.g. '32SC1' for an int32 (H, W) array).
        header: std_msgs/Header to copy stamp and frame_id from (None leaves it empty).
    Raises:
        ValueError: dtype or channel count disagree with the encoding.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f'image array must be (H, W) or (H, W, C), got shape {array.shape}')
    channels = 1 if array.ndim == 2 else array.shape[2]
    if encoding == 'passthrough':
        depth_names = {np.dtype(t): name for name, t in _GENERIC_DTYPES.items()}
        depth = depth_names.get(array.dtype.newbyteorder('='))
        if depth is None:
            raise ValueError(f'no image encoding for dtype {array.dtype}')
        encoding = f'{depth}C{channels}'
    dtype, expected_channels = encoding_layout(encoding)
    if array.dtype.newbyteorder('=') != dtype or channels != expected_channels:
        raise ValueError(f'encoding {encoding} needs dtype {dtype} with {expected_channels} '
                         f'channel(s), got {array.dtype} with {channels}')
    array = np.ascontiguousarray(array, dtype=dtype)  # native order, no padding
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _HOST_BIG_ENDIAN
    msg.step = int(array.shape[1] * channels * dtype.itemsize)
    msg.data = array.tobytes()
    return msg


def compressed_to_numpy(msg, desired_encoding='bgr8'):
    """Decode a sensor_msgs/CompressedImage (jpeg / png) into an array.

    Returns bgr8 by default, as cv_bridge.compressed_imgmsg_to_cv2 does; 'passthrough'
    keeps what the codec stored (mono images stay (H, W), 16-bit PNG stays uint16).
    Raises ValueError when the data cannot be decoded.
    """
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if array is None:
        raise ImageFormatError('decode', f'cannot decode compressed image of format '
                                         f'{msg.format!r} ({buf.size} bytes)')
    if desired_encoding == 'passthrough':
        return array
    depth = '16' if array.dtype == np.uint16 else '8'
    channels = 1 if array.ndim == 2 else array.shape[2]
    src = {1: f'mono{depth}', 3: f'bgr{depth}', 4: f'bgra{depth}'}[channels]
    return convert_encoding(array, src, desired_encoding)


def numpy_to_compressed(array, fmt='jpeg', header=None):
    """Encode a bgr8 / mono8 (or mono16 for png) array as a sensor_msgs/CompressedImage."""
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else f'.{fmt}', array)
    if not ok:
        raise ValueError(f'cannot encode array of shape {array.shape} as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = encoded.tobytes()
    return msg


def decode_rgb(msg):
    """RGB uint8 [h, w, 3] of a sensor_msgs/Image or CompressedImage; every way it can fail
    (layout, encoding, undecodable data, zero size) raises ImageFormatError with a reason."""
    try:
        if hasattr(msg, 'format'):
            rgb = compressed_to_numpy(msg, 'rgb8')
        else:
            rgb = image_to_numpy(msg, 'rgb8')
    except ImageFormatError:
        raise
    except (ValueError, TypeError, cv2.error) as exc:
        raise ImageFormatError('decode', str(exc)) from exc
    if rgb.size == 0:
        raise ImageFormatError('zero_size', 'image has zero size')
    return rgb
