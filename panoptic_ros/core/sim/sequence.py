"""Stage: simulated camera over time. A robot drives through one scene; every frame is
rendered once to disk with its ground truth and replayed later (demo, benchmarks, sim node).

Layout of a sequence folder:
  sequence.json          fps, speed, seed, camera_info, T_base_optical, grid, and per frame:
                         index, stamp (seconds from the start), T_world_base, file names
  images/<index>.jpg     RGB (JPEG quality 95)
  panoptic/<index>.png   panoptic ids, COCO RGB encoding
  occupancy/<index>.png  ground-truth grid in the robot's base frame, uint8 = value + 1
The robot starts at the world origin and drives straight along the scene's main road at a
constant speed; the camera is mounted at a fixed pose on it (drawn once per sequence).
"""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.core.camera_model import camera_info_dict
from panoptic_ros.core.sim.coco import read_panoptic_png, write_image_jpeg, write_panoptic_png
from panoptic_ros.core.sim.occupancy_gt import GridSpec, read_grid_png, write_grid_png
from panoptic_ros.core.sim.world import along_road, SimConfig, SimWorld


def robot_pose(t, speed, yaw):
    """T_world_base at time t (seconds) driving straight at `speed` m/s with heading yaw."""
    return along_road(speed * t, yaw)


def render_sequence(out, seed, frames, fps=10.0, speed=1.0, config=SimConfig(),
                    grid=GridSpec(), progress=None):
    """Render `frames` frames of one scene to `out`; returns the sequence metadata dict."""
    with SimWorld(seed, config) as world:
        T_base_optical, K = world.random_camera()
        writer = SequenceWriter(out, seed, fps, speed, config, grid, T_base_optical, K)
        for index in range(frames):
            stamp = index / fps
            T_world_base = robot_pose(stamp, speed, world.road_yaw)
            writer.add(world.render(T_base_optical, K, grid, T_world_base), stamp)
            if progress is not None:
                progress(index + 1, frames)
    return writer.finish()


class SequenceWriter:
    """Writes one camera's sequence folder frame by frame (the layout above)."""

    def __init__(self, out, seed, fps, speed, config, grid, T_base_optical, K):
        self.out = Path(out)
        for sub in ('images', 'panoptic', 'occupancy'):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.meta = {'seed': seed, 'fps': fps, 'speed': speed,
                     'camera_info': camera_info_dict(K, config.width, config.height),
                     'T_base_optical': np.asarray(T_base_optical).tolist(),
                     'grid': dataclasses.asdict(grid), 'frames': []}

    def add(self, frame, stamp):
        """Write a rendered Frame taken at `stamp` seconds."""
        index = len(self.meta['frames'])
        name = f'{index:06d}'
        write_image_jpeg(self.out / 'images' / f'{name}.jpg', frame.rgb)
        write_panoptic_png(self.out / 'panoptic' / f'{name}.png', frame.panoptic)
        write_grid_png(self.out / 'occupancy' / f'{name}.png', frame.occupancy)
        self.meta['frames'].append({
            'index': index, 'stamp': stamp, 'T_world_base': frame.T_world_base.tolist(),
            'image': f'images/{name}.jpg', 'panoptic': f'panoptic/{name}.png',
            'occupancy': f'occupancy/{name}.png', 'segments': frame.segments})

    def finish(self):
        (self.out / 'sequence.json').write_text(json.dumps(self.meta))
        return self.meta


class Sequence:
    """A rendered sequence read back from disk; frames load lazily.

    seq[i] -> dict(rgb uint8 [H, W, 3], panoptic int64 [H, W], occupancy int16 [ny, nx],
    stamp float seconds, T_world_base [4, 4], segments list).
    """

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / 'sequence.json'
        if not path.is_file():
            raise FileNotFoundError(f'{path} not found: not a rendered sequence folder')
        self.meta = json.loads(path.read_text())
        self.camera_info = self.meta['camera_info']
        self.T_base_optical = np.asarray(self.meta['T_base_optical'])
        self.grid = GridSpec(**self.meta['grid'])
        self.fps = self.meta['fps']

    def __len__(self):
        return len(self.meta['frames'])

    def image(self, index):
        """RGB of frame `index` only (what a camera driver would send)."""
        path = self.root / self.meta['frames'][index]['image']
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise FileNotFoundError(f'cannot read {path}')
        return bgr[..., ::-1]

    def __getitem__(self, index):
        entry = self.meta['frames'][index]
        return {'rgb': self.image(index),
                'panoptic': read_panoptic_png(self.root / entry['panoptic']),
                'occupancy': read_grid_png(self.root / entry['occupancy']),
                'stamp': entry['stamp'], 'T_world_base': np.asarray(entry['T_world_base']),
                'segments': entry['segments']}
