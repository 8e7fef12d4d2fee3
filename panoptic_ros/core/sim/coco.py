"""COCO panoptic format: the dataset layout every panoptic tool reads.

A panoptic PNG stores segment id = R + 256 * G + 256**2 * B per pixel (0: unlabelled); the
annotation JSON lists per image its `segments_info` (id, category_id, iscrowd, bbox
[x, y, w, h], area) and the `categories` (id, name, isthing, color). panoptic_ros uses its
panoptic ids (category * 1000 + instance) as COCO segment ids, so both agree.
"""

import cv2
import numpy as np


def id_to_rgb(ids):
    """int [H, W] segment ids -> uint8 [H, W, 3] RGB."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def rgb_to_id(rgb):
    """uint8 [H, W, 3] RGB -> int64 [H, W] segment ids."""
    rgb = np.asarray(rgb, np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_panoptic_png(path, ids):
    """Write segment ids [H, W] as a COCO panoptic PNG."""
    cv2.imwrite(str(path), cv2.cvtColor(id_to_rgb(ids), cv2.COLOR_RGB2BGR))


def read_panoptic_png(path):
    """Segment ids int64 [H, W] of a COCO panoptic PNG."""
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f'cannot read panoptic PNG {path}')
    return rgb_to_id(bgr[..., ::-1])


def write_image_jpeg(path, rgb):
    """Write an RGB image [H, W, 3] as the datasets' JPEG (quality 95)."""
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def annotation(image_id, file_name, segments):
    """The per-image entry of `annotations` from panoptic_ros segments (world.segments_of)."""
    return {'image_id': image_id, 'file_name': file_name,
            'segments_info': [{'id': s['id'], 'category_id': s['category_id'], 'iscrowd': 0,
                               'bbox': s['bbox'], 'area': s['area']} for s in segments]}
