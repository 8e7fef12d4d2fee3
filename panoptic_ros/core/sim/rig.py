"""Stage: a surround rig in the simulator. Several cameras on one robot driving through one
scene, every frame of every camera rendered at the same moment with its ground truth.

Layout of a rig folder:
  rig.json        fps, speed, seed, grid, the cameras (name, xyz, rpy, vertical_fov_deg) and
                  the robot's odometry per frame (stamp, x, y, yaw in the odometry frame,
                  which is the world frame: the robot starts at its origin)
  <camera>/       one sequence folder per camera (core.sim.sequence layout: images,
                  panoptic labels, ground-truth grids in the base frame, the camera's
                  CameraInfo and T_base_optical)

Ground truth of the shared grids: `fused_truth` (the cell values all cameras' ground truths
agree on, occupied where any sees an obstacle: the ground truths of one moment never
conflict, an obstacle's footprint is occupied or unknown in each) and `SeenSoFar` (every cell
of the static world the rig has seen up to a frame, in the odometry frame).

The node's parameters for a rig are rig_parameters(): cameras, camera_xyz, camera_rpy and a
grid around the robot (config/surround.yaml holds those of SURROUND).
"""

from dataclasses import dataclass
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from panoptic_ros.core.camera_model import camera_pose_in_base, intrinsics_from_fov
from panoptic_ros.core.occupancy.grid import UNKNOWN
from panoptic_ros.core.sim.occupancy_gt import GridSpec
from panoptic_ros.core.sim.sequence import robot_pose, Sequence, SequenceWriter
from panoptic_ros.core.sim.world import SimConfig, SimWorld


@dataclass(frozen=True)
class RigCamera:
    name: str
    xyz: tuple                      # in the base frame (m)
    rpy: tuple                      # roll, pitch (> 0 looks down), yaw (rad)
    vertical_fov_deg: float = 60.0

    @property
    def T_base_optical(self):
        return camera_pose_in_base(*self.xyz, *self.rpy)


# Four cameras 90 degrees apart, 1 m high, 20 degrees down: 75 degrees wide each at 4:3, so
# their views barely overlap.
SURROUND = tuple(RigCamera(name, (0.3 * math.cos(yaw), 0.3 * math.sin(yaw), 1.0),
                           (0.0, math.radians(20.0), yaw))
                 for name, yaw in (('front', 0.0), ('left', math.pi / 2), ('rear', math.pi),
                                   ('right', -math.pi / 2)))
# Three wide cameras 60 degrees apart (91 degrees wide each): large overlaps, where the fusion
# rule matters.
FRONT_SIDES = tuple(RigCamera(name, (0.3 * math.cos(yaw), 0.3 * math.sin(yaw), 1.0),
                              (0.0, math.radians(20.0), yaw), 75.0)
                    for name, yaw in (('front', 0.0), ('front_left', math.pi / 3),
                                      ('front_right', -math.pi / 3)))
RIGS = {'surround': SURROUND, 'front_sides': FRONT_SIDES}
# The grid around the robot (the node's default grid looks ahead only).
SURROUND_GRID = GridSpec(resolution=0.05, width=200, height=200, origin_x=-5.0, origin_y=-5.0)
# Scenes with things and walls all around the start, not only ahead, and a main road the
# robot drives on (nearly along x, under the start).
SURROUND_SCENE = SimConfig(area_x=(-12.0, 14.0), wall_x=(-14.0, 20.0), crowd_start_x_max=6.0,
                           road_yaw=(-0.05, 0.05), road_lateral=(-0.5, 0.5),
                           road_width=(4.0, 7.0))


def rig_parameters(cameras=SURROUND, grid=SURROUND_GRID):
    """panoptic_node parameters of a rig: {name: value}."""
    return {'cameras': [c.name for c in cameras],
            'camera_xyz': [float(v) for c in cameras for v in c.xyz],
            'camera_rpy': [float(v) for c in cameras for v in c.rpy],
            'grid_resolution': grid.resolution, 'grid_width': grid.width,
            'grid_height': grid.height, 'grid_origin_x': grid.origin_x,
            'grid_origin_y': grid.origin_y}


def render_rig_sequence(out, seed, frames, cameras=SURROUND, fps=5.0, speed=0.5,
                        config=SURROUND_SCENE, grid=SURROUND_GRID, progress=None):
    """Render `frames` moments of one scene seen by every camera of the rig to `out`."""
    out = Path(out)
    odometry = []
    with SimWorld(seed, config) as world:
        writers = []
        for cam in cameras:
            K = intrinsics_from_fov(config.width, config.height, cam.vertical_fov_deg)
            writers.append((cam, K, SequenceWriter(out / cam.name, seed, fps, speed, config,
                                                   grid, cam.T_base_optical, K)))
        for index in range(frames):
            stamp = index / fps
            T_world_base = robot_pose(stamp, speed, world.road_yaw)
            for cam, K, writer in writers:
                writer.add(world.render(cam.T_base_optical, K, grid, T_world_base), stamp)
            odometry.append([stamp, float(T_world_base[0, 3]), float(T_world_base[1, 3]),
                             world.road_yaw])
            if progress is not None:
                progress(index + 1, frames)
    for _, _, writer in writers:
        writer.finish()
    meta = {'seed': seed, 'fps': fps, 'speed': speed, 'grid': dataclasses.asdict(grid),
            'cameras': [dataclasses.asdict(c) for c in cameras], 'odometry': odometry}
    (out / 'rig.json').write_text(json.dumps(meta))
    return meta


class RigSequence:
    """A rendered rig read back: cameras [RigCamera], sequences {name: Sequence} (frames
    load lazily), odometry [n, 4] (stamp, x, y, yaw), grid GridSpec."""

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / 'rig.json'
        if not path.is_file():
            raise FileNotFoundError(f'{path} not found: not a rendered rig folder')
        self.meta = json.loads(path.read_text())
        self.cameras = [RigCamera(c['name'], tuple(c['xyz']), tuple(c['rpy']),
                                  c['vertical_fov_deg']) for c in self.meta['cameras']]
        self.sequences = {c.name: Sequence(self.root / c.name) for c in self.cameras}
        self.odometry = np.asarray(self.meta['odometry'], float)
        self.grid = GridSpec(**self.meta['grid'])
        self.fps = self.meta['fps']

    def __len__(self):
        return len(self.odometry)


def is_rig(root):
    return (Path(root) / 'rig.json').is_file()


def fused_truth(grids):
    """Ground truth of the fused grid from each camera's ground truth of one moment (int
    [n, height, width]): occupied where any camera sees an obstacle's footprint, else the
    ground value any camera sees, else unknown."""
    return np.asarray(grids).max(0).astype(np.int8)


class SeenSoFar:
    """Ground truth of the accumulated map: every cell of a world-frame grid (`area`, a
    GridSpec in the odometry frame) the rig has seen so far, with the value seen (obstacles
    over ground). add(base-frame grid, its GridSpec, pose (x, y, yaw))."""

    def __init__(self, area):
        self.area = area
        self.values = np.full((area.height, area.width), UNKNOWN, np.int8)

    def add(self, grid_values, grid, pose):
        x, y, yaw = pose
        gx, gy = grid.cell_centres()
        known = grid_values >= 0
        c, s = math.cos(yaw), math.sin(yaw)
        wx, wy = x + c * gx[known] - s * gy[known], y + s * gx[known] + c * gy[known]
        cells = self.area.cells_of(np.stack([wx, wy], 1))
        ok = cells >= 0
        flat = self.values.reshape(-1)
        np.maximum.at(flat, cells[ok], grid_values[known][ok].astype(np.int8))
