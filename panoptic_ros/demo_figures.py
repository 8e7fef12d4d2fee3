"""Pictures of the demo: montages of camera image, prediction and ground truth, the
occupancy grids as maps in metres, and an animation of the whole sequence.

Offline tool code (matplotlib, Pillow); the drawing of one label image is
panoptic_ros.core.visualization.draw_panoptic.
"""

import cv2
import numpy as np

from panoptic_ros.core.visualization import OCCUPANCY_COLORS, occupancy_to_rgb

OCCUPANCY_LEGEND = ((0, 'free'), (50, 'non-drivable'), (100, 'occupied'), (-1, 'unknown'))


def titled(image, title, height=24):
    """uint8 RGB image with a white title bar of `height` pixels above it."""
    bar = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (6, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, image], 0)


def montage(rows, gap=6):
    """Rows of tiles (uint8 RGB; the tiles of a row of one height) joined into one picture,
    white gaps between tiles and rows, rows padded white on the right to one width."""
    lines = []
    for row in rows:
        height = row[0].shape[0]
        parts = [row[0]]
        for tile in row[1:]:
            parts += [np.full((height, gap, 3), 255, np.uint8), tile]
        lines.append(np.concatenate(parts, 1))
    width = max(line.shape[1] for line in lines)
    parts = []
    for line in lines:
        if parts:
            parts.append(np.full((gap, width, 3), 255, np.uint8))
        parts.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)),
                            constant_values=255))
    return np.concatenate(parts, 0)


def fov_on_ground(T_base_optical, K, width):
    """Camera position (x, y) in the base frame and the unit (x, y) directions of the left
    and right image borders at the principal row, projected onto the ground plane."""
    K = np.asarray(K, float).reshape(3, 3)
    T = np.asarray(T_base_optical, float)
    rays = np.linalg.inv(K) @ np.array([[0.0, width - 1.0], [K[1, 2]] * 2, [1.0, 1.0]])
    directions = (T[:3, :3] @ rays)[:2].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return T[:2, 3], directions


def occupancy_figure(path, panels, resolution, origin_x, origin_y, T_base_optical, K, width):
    """Save side-by-side maps of occupancy grids as a PNG.

    panels: [(title, int8 grid [ny, nx])], rows = y, columns = x of the base frame, cell
    (iy, ix) centred at origin + (i + 0.5) * resolution metres. Drawn from above with x
    (forward) up and y (left) to the left, axes in metres, the robot at the base origin,
    the camera's horizontal field of view, and a legend of the cell values.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Polygon
    ny, nx = panels[0][1].shape
    x0, x1 = origin_x, origin_x + nx * resolution
    y0, y1 = origin_y, origin_y + ny * resolution
    camera, directions = fov_on_ground(T_base_optical, K, width)
    reach = 2 * max(abs(x0), abs(x1), abs(y0), abs(y1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.6), squeeze=False)
    for ax, (title, grid) in zip(axes[0], panels):
        ax.imshow(occupancy_to_rgb(grid, 1), extent=(y1, y0, x0, x1), interpolation='nearest')
        for d in directions:   # plotted as (y, x): y to the left, x up
            ax.plot([camera[1], camera[1] + reach * d[1]], [camera[0], camera[0] + reach * d[0]],
                    color='tab:orange', lw=1.2)
        ax.add_patch(Polygon([(0.25, -0.35), (-0.25, -0.35), (0, 0.35)], closed=True,
                             color='tab:red', zorder=3))
        ax.set_xlim(y1, y0)
        ax.set_ylim(x0, x1)
        ax.set_xlabel('y (m, left of the robot)')
        ax.set_ylabel('x (m, ahead of the robot)')
        ax.set_title(title)
        ax.grid(alpha=0.25)
    handles = [Patch(facecolor=np.array(OCCUPANCY_COLORS[v]) / 255, edgecolor='black', label=n)
               for v, n in OCCUPANCY_LEGEND]
    handles += [Patch(color='tab:red', label='robot (base origin)'),
                Patch(color='tab:orange', label='camera field of view')]
    fig.legend(handles=handles, loc='lower center', ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_animation(path, frames, fps, max_width=640):
    """Save uint8 RGB frames as a looping GIF at `fps`, each scaled to at most max_width."""
    from PIL import Image
    images = []
    for frame in frames:
        scale = min(1.0, max_width / frame.shape[1])
        if scale < 1.0:
            frame = cv2.resize(frame, (int(frame.shape[1] * scale), int(frame.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        images.append(Image.fromarray(frame).quantize(colors=96,
                                                      method=Image.Quantize.MEDIANCUT))
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps),
                   loop=0, optimize=True)
