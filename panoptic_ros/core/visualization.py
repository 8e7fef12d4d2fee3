"""Stage: outputs -> pictures. Colour panoptic label images for overlays (rviz, demos).

Pure numpy + cv2; no ROS.
"""

import cv2
import numpy as np


def colorize_panoptic(panoptic, label_divisor, class_colors, void_color=(0, 0, 0)):
    """RGB image of a panoptic label image.

    Args:
        panoptic: int [H, W], id = category_id * label_divisor + instance_id, 0 void.
        label_divisor: int.
        class_colors: uint8-compatible [K, 3] RGB per category id (index 0 unused: void).
    Returns:
        uint8 [H, W, 3] RGB. Stuff pixels take their class colour; thing instances of one
        class get distinct, deterministic shades of it; void is void_color.
    """
    panoptic = np.asarray(panoptic)
    colors = np.asarray(class_colors, np.int32)
    category = panoptic // label_divisor
    instance = panoptic % label_divisor
    if category.max(initial=0) >= len(colors):
        raise ValueError(f'category id {category.max()} has no colour ({len(colors)} given)')
    rgb = colors[category]
    # Instance shades: alternate brighter / darker steps around the class colour.
    step = np.where(instance % 2 == 1, 1, -1) * ((instance + 1) // 2) * 28
    rgb = np.where(instance[..., None] > 0, np.clip(rgb + step[..., None], 0, 255), rgb)
    rgb[panoptic == 0] = void_color
    return rgb.astype(np.uint8)


def overlay(image_rgb, colored, alpha=0.5, boundaries=None):
    """Blend a coloured label image over an RGB image; optionally draw segment boundaries.

    Args: image_rgb uint8 [H, W, 3]; colored uint8 [H, W, 3]; boundaries: int [H, W] label
    image whose id changes are drawn white.
    """
    out = cv2.addWeighted(image_rgb, 1.0 - alpha, colored, alpha, 0.0)
    if boundaries is not None:
        edges = np.zeros(boundaries.shape, bool)
        edges[:, 1:] |= boundaries[:, 1:] != boundaries[:, :-1]
        edges[1:, :] |= boundaries[1:, :] != boundaries[:-1, :]
        out[edges] = 255
    return out


OCCUPANCY_COLORS = {-1: (128, 128, 128), 0: (255, 255, 255), 50: (150, 200, 150),
                    100: (0, 0, 0)}


def occupancy_to_rgb(grid, cell_pixels=2):
    """RGB picture of an occupancy grid [ny, nx] (rows = y, cols = x, base frame) drawn as a
    map seen from above with x forward pointing up and y left pointing left: unknown grey,
    free white, non-drivable green, occupied black; other values shade from white to black."""
    grid = np.asarray(grid)
    values = np.clip(grid.astype(np.float32), 0, 100)
    rgb = np.repeat((255 - values * 2.55)[..., None], 3, -1).astype(np.uint8)
    for value, color in OCCUPANCY_COLORS.items():
        rgb[grid == value] = color
    picture = rgb.transpose(1, 0, 2)[::-1, ::-1]
    return np.ascontiguousarray(picture.repeat(cell_pixels, 0).repeat(cell_pixels, 1))
