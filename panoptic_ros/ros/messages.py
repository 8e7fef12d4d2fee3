"""Builders of every ROS message this package publishes, from numpy / core results.

Every builder takes the header to stamp with: outputs carry the input image's stamp.
"""

import array

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from nav_msgs.msg import OccupancyGrid
import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_ros.core.health import ERROR, OK, WARN
from panoptic_ros.core.visualization import colorize_panoptic, overlay
from panoptic_ros.msg import ClassTable, DetectionArray, PanopticSegmentation, Segment
from panoptic_ros.msg import Detection as DetectionMsg
from panoptic_ros.ros.image_codec import numpy_to_image

MARKER_DIAMETER, MARKER_HEIGHT = 0.4, 0.5   # metres: the cylinder drawn at a detection
OUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,   # image_reliability values
               'reliable': ReliabilityPolicy.RELIABLE}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# panoptic_node's outputs: name (the `outputs` parameter's entries) -> topic, type, QoS
OUTPUTS = {'panoptic': ('panoptic', PanopticSegmentation, OUT_QOS),
           'semantic': ('semantic', Image, OUT_QOS),
           'colored': ('panoptic/colored', Image, OUT_QOS),
           'detections': ('detections', DetectionArray, OUT_QOS),
           'markers': ('detections/markers', MarkerArray, OUT_QOS),
           'occupancy': ('occupancy', OccupancyGrid, LATCHED),
           'accumulated': ('occupancy/accumulated', OccupancyGrid, LATCHED)}


def stamp_seconds(stamp):
    """A builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def camera_info_msg(info, header):
    """sensor_msgs/CameraInfo from a camera_model.camera_info_dict()."""
    msg = CameraInfo(header=header, width=int(info['width']), height=int(info['height']),
                     distortion_model=info['distortion_model'])
    msg.d = [float(v) for v in info['d']]
    msg.k = [float(v) for v in info['k']]
    msg.r = [float(v) for v in info['r']]
    msg.p = [float(v) for v in info['p']]
    return msg


def panoptic_msg(header, panoptic, segments, label_divisor=1000):
    """PanopticSegmentation from an id image [H, W] and segment dicts (id, category_id,
    is_thing, area, bbox [x, y, w, h] or box [x1, y1, x2, y2], optional score)."""
    msg = PanopticSegmentation(header=header, label_divisor=int(label_divisor))
    msg.label = numpy_to_image(np.ascontiguousarray(panoptic, dtype=np.int32), '32SC1',
                               header=header)
    for s in segments:
        if 'box' in s:
            x1, y1, x2, y2 = s['box']
        else:
            x, y, w, h = s['bbox']
            x1, y1, x2, y2 = x, y, x + w, y + h
        msg.segments.append(Segment(
            id=int(s['id']), category_id=int(s['category_id']), is_thing=bool(s['is_thing']),
            score=float(s.get('score', 1.0)), area=int(s['area']),
            x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2)))
    return msg


def occupancy_msg(header, grid, resolution, origin_x, origin_y):
    """nav_msgs/OccupancyGrid from int [ny, nx] values (-1 unknown, 0..100); header.frame_id
    must be the grid's frame (the base frame)."""
    grid = np.asarray(grid)
    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(resolution)
    msg.info.height, msg.info.width = int(grid.shape[0]), int(grid.shape[1])
    msg.info.origin.position.x = float(origin_x)
    msg.info.origin.position.y = float(origin_y)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array('b', np.ascontiguousarray(grid, dtype=np.int8).tobytes())
    return msg


def semantic_msg(header, panoptic, label_divisor, num_classes):
    """sensor_msgs/Image of the category ids (mono8, mono16 beyond 255 classes)."""
    dtype, encoding = (np.uint8, 'mono8') if num_classes < 256 else (np.uint16, 'mono16')
    return numpy_to_image((panoptic // label_divisor).astype(dtype), encoding, header)


def colored_msg(header, rgb, panoptic, label_divisor, colors):
    """sensor_msgs/Image rgb8: the panoptic colours blended over the camera image, instance
    outlines drawn (for rviz)."""
    colored = colorize_panoptic(panoptic, label_divisor, colors)
    return numpy_to_image(overlay(rgb, colored, 0.5, panoptic), 'rgb8', header)


def detections_msg(header, base_frame_id, detections):
    """DetectionArray from core.perception.Detection objects (header: the image's)."""
    msg = DetectionArray(header=header, base_frame_id=base_frame_id)
    for d in detections:
        x1, y1, x2, y2 = d.box
        det = DetectionMsg(instance_id=d.instance_id, class_id=d.class_id,
                           class_name=d.class_name, score=d.score, x1=x1, y1=y1, x2=x2, y2=y2)
        if d.ground is not None:
            det.has_ground_position = True
            det.ground_x, det.ground_y = (float(v) for v in d.ground)
        msg.detections.append(det)
    return msg


def markers_msg(header, detections, colors):
    """MarkerArray for rviz: a cylinder and a label at the ground position of each detection
    that has one (header: the base frame's); the first marker deletes the previous frame's."""
    markers = MarkerArray()
    markers.markers.append(Marker(header=header, ns='panoptic', action=Marker.DELETEALL))
    for k, det in enumerate(d for d in detections if d.ground is not None):
        x, y = (float(v) for v in det.ground)
        r, g, b = colors[det.class_id]
        body = Marker(header=header, ns='panoptic', id=2 * k, type=Marker.CYLINDER,
                      action=Marker.ADD)
        body.pose.position = Point(x=x, y=y, z=MARKER_HEIGHT / 2)
        body.pose.orientation.w = 1.0
        body.scale.x = body.scale.y = MARKER_DIAMETER
        body.scale.z = MARKER_HEIGHT
        body.color.r, body.color.g, body.color.b, body.color.a = r / 255, g / 255, b / 255, 0.8
        label = Marker(header=header, ns='panoptic', id=2 * k + 1,
                       type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                       text=f'{det.class_name} {det.instance_id} {det.score:.2f}')
        label.pose.position = Point(x=x, y=y, z=MARKER_HEIGHT + 0.3)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.3
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        markers.markers += [body, label]
    return markers


def class_table_msg(stamp, classes, is_thing, colors, label_divisor):
    """ClassTable: names and is_thing with void at index 0, colours by category id."""
    msg = ClassTable(label_divisor=int(label_divisor))
    msg.header.stamp = stamp
    msg.names = ['void'] + list(classes)
    msg.is_thing = [False] + [bool(t) for t in is_thing]
    msg.r = [c[0] for c in colors]
    msg.g = [c[1] for c in colors]
    msg.b = [c[2] for c in colors]
    return msg


DIAGNOSTIC_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN,
                     ERROR: DiagnosticStatus.ERROR}


def diagnostics_msg(stamp, name, hardware_id, level, message, values):
    """DiagnosticArray of one status; level: core.health OK / WARN / ERROR; values:
    (key, value) string pairs."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id,
                              level=DIAGNOSTIC_LEVELS[level], message=message)
    status.values = [KeyValue(key=k, value=v) for k, v in values]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg


def frame_messages(wanted, header, out, grid, label_divisor, num_classes, colors):
    """{output name: message} of a core.perception.FrameOutput for the wanted outputs
    (occupancy only when a grid was computed). header: the input image's; grid: GridConfig
    (its frame_id is the base frame)."""
    image = Header(stamp=header.stamp, frame_id=header.frame_id)
    base = Header(stamp=header.stamp, frame_id=grid.frame_id)
    build = {
        'panoptic': lambda: panoptic_msg(image, out.panoptic, out.segments, label_divisor),
        'semantic': lambda: semantic_msg(image, out.panoptic, label_divisor, num_classes),
        'colored': lambda: colored_msg(image, out.rgb, out.panoptic, label_divisor, colors),
        'detections': lambda: detections_msg(image, grid.frame_id, out.detections),
        'markers': lambda: markers_msg(base, out.detections, colors),
        'occupancy': lambda: None if out.grid is None else occupancy_msg(
            base, out.grid, grid.resolution, grid.origin_x, grid.origin_y)}
    messages = {name: build[name]() for name in wanted}
    return {name: msg for name, msg in messages.items() if msg is not None}
