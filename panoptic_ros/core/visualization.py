"""Stage: outputs -> pictures. Colour panoptic label images for overlays (rviz, demos).

Pure numpy + cv2; no ROS.
"""

import cv2
import numpy as np


def class_palette(n):
    """Distinct RGB colours for n classes, index 0 = void (black); the same on every run."""
    rng = np.random.default_rng(7)
    return [(0, 0, 0)] + [tuple(int(c) for c in rng.integers(40, 255, 3)) for _ in range(n)]


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


def _put_label(image, text, center, scale=0.55):
    """White text with a black outline, centred on (x, y) and kept inside the image."""
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(min(max(center[0] - tw / 2, 1), image.shape[1] - tw - 1))
    y = int(min(max(center[1] + th / 2, th + 1), image.shape[0] - 2))
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness,
                    cv2.LINE_AA)


def draw_panoptic(image_rgb, panoptic, label_divisor, class_colors, class_names, alpha=0.45,
                  min_label_area=0.004):
    """A panoptic label image drawn over its camera image, as a person reads it.

    Args:
        image_rgb: uint8 [H, W, 3] camera image.
        panoptic: int [H, W], id = category_id * label_divisor + instance_id, 0 void.
        class_colors: RGB per category id (index 0 void); class_names: name per category id
            (index 0 void).
        min_label_area: segments smaller than this fraction of the image get no name.
    Returns:
        uint8 [H, W, 3]: the colours blended over the image, every segment's outline white,
        each thing instance and each large stuff segment named at its centroid.
    """
    panoptic = np.asarray(panoptic)
    out = overlay(image_rgb, colorize_panoptic(panoptic, label_divisor, class_colors), alpha,
                  panoptic)
    ids, inverse, area = np.unique(panoptic, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(panoptic.shape)
    rows, cols = np.indices(panoptic.shape)
    cy = np.bincount(inverse.ravel(), rows.ravel()) / area
    cx = np.bincount(inverse.ravel(), cols.ravel()) / area
    for k, segment in enumerate(ids):
        if segment == 0 or area[k] < min_label_area * panoptic.size:
            continue
        category = int(segment) // label_divisor
        name = class_names[category] if category < len(class_names) else str(category)
        _put_label(out, name, (cx[k], cy[k]))
    return out


def legend(class_names, class_colors, width, is_thing=None, row_height=22):
    """uint8 [h, width, 3] strip: a colour box and the name of every category, void (id 0:
    unknown or unlabelled pixels) first; things marked with '*' when is_thing (per category
    id) is given."""
    entries = []
    for category in range(len(class_names)):
        mark = '*' if is_thing is not None and is_thing[category] else ''
        entries.append((class_names[category] + mark, class_colors[category]))
    cell = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
               for n, _ in entries) + 30
    per_row = max(1, width // cell)
    rows = -(-len(entries) // per_row)
    strip = np.full((rows * row_height + 6, width, 3), 255, np.uint8)
    for k, (name, color) in enumerate(entries):
        x, y = (k % per_row) * cell + 6, (k // per_row) * row_height + 5
        cv2.rectangle(strip, (x, y), (x + 16, y + 14), tuple(int(c) for c in color), -1)
        cv2.rectangle(strip, (x, y), (x + 16, y + 14), (0, 0, 0), 1)
        cv2.putText(strip, name, (x + 22, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0),
                    1, cv2.LINE_AA)
    return strip
