"""Benchmark: occupancy projection latency (issue 6). Prints a table and writes it to a file.

Ground-truth panoptic labels of rendered sim frames (640x480) -> 200x200 grid at 5 cm with
the sim class mapping: median and p95 of OccupancyProjector.__call__ (the per-frame work;
the lookup tables are built once per camera model and extrinsics, timed separately), plus
the free / occupied IoU against the simulator's ground-truth grid, with the ground-truth
labels in and with the shipped model's labels in (its FramePipeline on the rendered image,
onnxruntime, default head settings), the issue's two measurements; and the bound for
occupied IoU that a monocular projection of contacts can reach: the front-band oracle
(occupancy_gt.front_band_oracle: each obstacle's visible front known exactly from the ground
truth, extruded by a fixed depth), at the projection's obstacle_depth and at the best of
ORACLE_DEPTHS (one depth for all frames), next to the projection's own occupied IoU at
those depths.

Usage: python benchmarks/bench_occupancy.py [--frames 8] [--repeats 50]
           [--model models/panoptic_light_sim.safetensors]
           [--out benchmarks/results/occupancy_cpu.md]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from common import machine_description, write_result
from panoptic_ros.core.backends import configure_torch_threads, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.metrics import occupancy_scores
from panoptic_ros.core.occupancy import GridConfig, OccupancyConfig, OccupancyProjector
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.occupancy_gt import front_band_oracle, OCCUPIED
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

SIM_ROLES = {1: 'free', 2: 'cost', 4: 'ignore'}
ORACLE_DEPTHS = (0.15, 0.25, 0.4, 0.6, 0.8, 1.0)


def iou(marked, truth):
    return 100.0 * (marked & truth).sum() / max(1, (marked | truth).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/occupancy_cpu.md'))
    args = parser.parse_args()
    model, _ = load_checkpoint(args.model)
    backend = make_backend('onnxruntime', model, cache_dir=Path('.cache'))
    configure_torch_threads(backend)
    pipeline = FramePipeline(backend)
    rows, free, occupied, model_free, model_occupied = [], [], [], [], []
    depth = OccupancyConfig().obstacle_depth             # the projection's
    oracle = {d: [] for d in sorted({depth, *ORACLE_DEPTHS})}
    sweep = {d: [] for d in oracle}
    for seed in range(100, 100 + args.frames):
        frame = render_random_frame(seed, SimConfig())
        g = frame.grid
        start = time.perf_counter()
        projector = OccupancyProjector(frame.K, None, frame.panoptic.shape,
                                       frame.T_base_optical,
                                       GridConfig(g.resolution, g.width, g.height, g.origin_x,
                                                  g.origin_y),
                                       OccupancyConfig(roles=SIM_ROLES))
        build = time.perf_counter() - start
        for _ in range(3):
            projector(frame.panoptic)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            grid, _ = projector(frame.panoptic)
            times.append(time.perf_counter() - start)
        scores = occupancy_scores(grid, frame.occupancy)
        free.append(scores['free_iou'])
        occupied.append(scores['occupied_iou'])
        predicted = pipeline(frame.rgb).panoptic.panoptic.numpy()
        model_scores = occupancy_scores(projector(predicted)[0], frame.occupancy)
        model_free.append(model_scores['free_iou'])
        model_occupied.append(model_scores['occupied_iou'])
        for d in sweep:        # the projection at the oracle's depths (ground-truth labels)
            if d == depth:
                sweep[d].append(scores['occupied_iou'])
                continue
            swept = OccupancyProjector(frame.K, None, frame.panoptic.shape,
                                       frame.T_base_optical, projector.grid,
                                       OccupancyConfig(roles=SIM_ROLES, obstacle_depth=d))
            sweep[d].append(occupancy_scores(swept(frame.panoptic)[0],
                                             frame.occupancy)['occupied_iou'])
        for d in oracle:
            oracle[d].append(iou(front_band_oracle(frame.occupancy, frame.footprints,
                                                   frame.T_base_optical[:2, 3], d, frame.grid),
                                 frame.occupancy == OCCUPIED))
        rows.append((seed, build * 1e3, statistics.median(times) * 1e3,
                     np.percentile(times, 95) * 1e3, scores['free_iou'],
                     scores['occupied_iou'], model_scores['free_iou'],
                     model_scores['occupied_iou'], oracle[depth][-1]))
    best = max(oracle, key=lambda d: np.mean(oracle[d]))
    lines = ['# Occupancy projection, 640x480 labels -> 200x200 grid at 0.05 m',
             '', f'Machine: {machine_description()}, numpy {np.__version__}; '
             f'{args.repeats} runs per frame.', '',
             '| frame seed | tables built (ms, once) | p50 (ms) | p95 (ms) | free IoU | '
             f'occupied IoU | model: free IoU | model: occupied IoU | oracle occupied IoU '
             f'at {depth:g} m |',
             '|---|---|---|---|---|---|---|---|---|']
    lines += [f'| {s} | {b:.0f} | {p50:.2f} | {p95:.2f} | {f:.1f} | {o:.1f} | {mf:.1f} | '
              f'{mo:.1f} | {orc:.1f} |' for s, b, p50, p95, f, o, mf, mo, orc in rows]
    all_p50 = statistics.median([r[2] for r in rows])
    lines += ['', f'Median p50 over frames: {all_p50:.2f} ms. Ground-truth labels in: mean '
              f'free IoU {np.mean(free):.1f}, mean occupied IoU {np.mean(occupied):.1f}. '
              f'Shipped model ({args.model.name}) labels in: mean free IoU '
              f'{np.mean(model_free):.1f}, mean occupied IoU {np.mean(model_occupied):.1f}.',
              '', 'Front-band oracle (bound for occupied IoU), mean over frames by depth: ' +
              ', '.join(f'{d:g} m {np.mean(v):.1f}' for d, v in oracle.items()) +
              f'; best {np.mean(oracle[best]):.1f} at {best:g} m.',
              '', 'The projection (ground-truth labels) by obstacle_depth, mean occupied IoU: ' +
              ', '.join(f'{d:g} m {np.mean(v):.1f}' for d, v in sweep.items()) + '.']
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
