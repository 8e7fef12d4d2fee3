"""Builders of this package's ROS messages from numpy results (ROS layer only).

Every builder takes the header to stamp with: outputs carry the input image's stamp.
"""

import array

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo

from panoptic_ros.msg import PanopticSegmentation, Segment
from panoptic_ros.ros.image_codec import numpy_to_image


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
