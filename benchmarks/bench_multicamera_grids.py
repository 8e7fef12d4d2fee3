"""Benchmark: the surround rig's shared grids against the simulator's ground truth. Prints a
table and writes it to a file.

The rig (core/sim/rig.py: four cameras 90 degrees apart on one robot, a 30 s drive, 5 moments
a second) is rendered once into data/. Labels in are the ground-truth panoptic labels (what
the projection and the fusion do, without the network's errors) or, with --model, the
network's. Per moment each camera's labels are projected onto the base-frame grid with that
camera's intrinsics and extrinsics (the node's projector and settings), then:

- fused grid, each fusion rule, against the fused ground truth (core.sim.rig.fused_truth):
  free and occupied IoU over the cells the truth knows (core.metrics.occupancy_scores);
- accumulated map (core.occupancy.accumulated, the node's defaults, every camera grid added
  at the odometry pose of its stamp) against every cell of the static world the rig has seen
  so far (SeenSoFar), in the map's window; beside it the single moment's fused grid placed
  in the same window, against the same truth.

Scores are means over the moments after the first 5 s. Usage:
  python benchmarks/bench_multicamera_grids.py [--rig data/rig_surround] [--model M]
      [--out benchmarks/results/multicamera_grids.md]
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from common import machine_description, write_result
from panoptic_ros.core.camera_model import PinholeCamera
from panoptic_ros.core.metrics import occupancy_scores
from panoptic_ros.core.occupancy import OccupancyProjector
from panoptic_ros.core.occupancy.accumulated import AccumulatedMap
from panoptic_ros.core.occupancy.fusion import fuse, FUSION_RULES
from panoptic_ros.core.settings import load_yaml_params, Settings
from panoptic_ros.core.sim.occupancy_gt import GridSpec
from panoptic_ros.core.sim.rig import (fused_truth, render_rig_sequence, RigSequence,
                                       rig_parameters, SeenSoFar)
from panoptic_ros.core.sim.taxonomy import CLASSES

RIG_SEED, RIG_MOMENTS = 7, 150
WARMUP_S = 5.0


def labels_source(model_path):
    """(name, labels(rgb, panoptic) -> int [H, W])."""
    if model_path is None:
        return 'ground-truth labels', lambda rgb, panoptic: panoptic
    from panoptic_ros.core.backends import configure_torch_threads, make_backend
    from panoptic_ros.core.checkpoint import load_checkpoint
    from panoptic_ros.core.inference import FramePipeline
    model, _ = load_checkpoint(model_path)
    backend = make_backend('onnxruntime_int8', model, cache_dir=Path('.cache'),
                           model_path=model_path)
    configure_torch_threads(backend)
    pipeline = FramePipeline(backend)
    return f'network labels ({Path(model_path).name}, {backend.name})', \
        lambda rgb, panoptic: pipeline(rgb).panoptic.panoptic.numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rig', type=Path, default=Path('data/rig_surround'))
    parser.add_argument('--model', type=Path, default=None)
    parser.add_argument('--memories', type=float, nargs='+', default=[10.0, 30.0, 60.0],
                        help='map_memory values compared beside the node\'s default')
    parser.add_argument('--out', type=Path,
                        default=Path('benchmarks/results/multicamera_grids.md'))
    args = parser.parse_args()
    if not (args.rig / 'rig.json').is_file():
        print(f'rendering the surround rig to {args.rig} (once) ...', flush=True)
        render_rig_sequence(args.rig, RIG_SEED, RIG_MOMENTS)
    rig = RigSequence(args.rig)
    params = {**load_yaml_params(Path('config/panoptic.yaml')),
              **rig_parameters(rig.cameras, rig.grid)}
    settings = Settings.from_params(params)
    config = settings.occupancy_config([c.name for c in CLASSES], 1000)
    source, labels = labels_source(args.model)
    projectors = {}
    for cam in rig.cameras:
        camera = PinholeCamera.from_camera_info(rig.sequences[cam.name].camera_info)
        projectors[cam.name] = OccupancyProjector(camera, cam.T_base_optical, rig.grid, config,
                                                  len(CLASSES) + 1)
    c = settings.map
    memories = [c.memory] + sorted(set(args.memories) - {c.memory})
    maps = {m: AccumulatedMap(dataclasses.replace(c, memory=m)) for m in memories}
    path = rig.odometry[:, 1:3]
    area = GridSpec(resolution=c.resolution, width=int((np.ptp(path[:, 0]) + 50) / c.resolution),
                    height=int((np.ptp(path[:, 1]) + 50) / c.resolution),
                    origin_x=float(path[:, 0].min() - 25), origin_y=float(path[:, 1].min() - 25))
    truth = SeenSoFar(area)
    scores = {rule: [] for rule in FUSION_RULES}
    scores.update(single=[], **{f'memory {m:g}': [] for m in memories})
    for k in range(len(rig)):
        stamp, x, y, yaw = rig.odometry[k]
        grids, truths = [], []
        for cam in rig.cameras:
            frame = rig.sequences[cam.name][k]
            grids.append(projectors[cam.name](labels(frame['rgb'], frame['panoptic']))[0])
            truths.append(frame['occupancy'])
            for world_map in maps.values():
                world_map.update(grids[-1], rig.grid, (x, y, yaw), stamp)
        fused_gt = fused_truth(truths)
        truth.add(fused_gt, rig.grid, (x, y, yaw))
        if stamp < WARMUP_S:
            continue
        for rule in FUSION_RULES:
            fused = fuse(grids, rule, [cam.T_base_optical[:2, 3] for cam in rig.cameras],
                         rig.grid)
            scores[rule].append(occupancy_scores(fused, fused_gt))
        window = map_window(area, maps[c.memory])
        single = SeenSoFar(area)
        single.add(fuse(grids, settings.fusion_rule), rig.grid, (x, y, yaw))
        scores['single'].append(occupancy_scores(single.values[window], truth.values[window]))
        for m, world_map in maps.items():
            scores[f'memory {m:g}'].append(occupancy_scores(world_map.values(),
                                                            truth.values[window]))
    rows = ['| grid | against | free IoU | occupied IoU |', '|---|---|---|---|']
    names = {rule: (f'fused, {rule}', 'fused ground truth of the moment')
             for rule in FUSION_RULES}
    names['single'] = ('one moment\'s fused grid', 'static world seen so far')
    for m in memories:
        names[f'memory {m:g}'] = (f'occupancy/accumulated, map_memory {m:g} s'
                                  f'{" (default)" if m == c.memory else ""}',
                                  'static world seen so far')
    for key, values in scores.items():
        free = np.nanmean([v['free_iou'] for v in values])
        occupied = np.nanmean([v['occupied_iou'] for v in values])
        rows.append(f'| {names[key][0]} | {names[key][1]} | {free:.1f} | {occupied:.1f} |')
    n = len(scores['single'])
    text = '\n'.join(
        [f'# Camera rig {args.rig.name}: fused and accumulated grids ({source})', '',
         f'Rig {args.rig} (seed {rig.meta["seed"]}, {len(rig.cameras)} cameras, {len(rig)} '
         f'moments at {rig.fps:g} Hz, {rig.meta["speed"]} m/s); means over the {n} moments '
         f'after the first {WARMUP_S:g} s. Map: {c.width}x{c.height} cells of {c.resolution} m; '
         f'fusion rule of the one-moment grid: {settings.fusion_rule}. Free: value 0 (road); '
         'occupied: 100; over the cells the truth knows.', '', *rows, '',
         f'Machine: {machine_description()}.', ''])
    write_result(text, args.out)


def map_window(area, world_map):
    """Index of the accumulated map's cells in the `area` grid (same resolution)."""
    c = world_map.config
    ox, oy = world_map.origin_xy
    j0 = int(round((ox - area.origin_x) / c.resolution))
    i0 = int(round((oy - area.origin_y) / c.resolution))
    return slice(i0, i0 + c.height), slice(j0, j0 + c.width)


if __name__ == '__main__':
    main()
