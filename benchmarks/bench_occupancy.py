"""Benchmark: occupancy projection latency (issue 6). Prints a table and writes it to a file.

Ground-truth panoptic labels of rendered sim frames (640x480) -> 200x200 grid at 5 cm with
the sim class mapping: median and p95 of OccupancyProjector.__call__ (the per-frame work;
the lookup tables are built once per camera model and extrinsics, timed separately), plus
the free / occupied IoU against the simulator's ground-truth grid, with the ground-truth
labels in and with the shipped model's labels in (its FramePipeline on the rendered image,
onnxruntime, default head settings), the issue's two measurements.

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
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

SIM_ROLES = {1: 'free', 2: 'cost', 4: 'ignore'}


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
        rows.append((seed, build * 1e3, statistics.median(times) * 1e3,
                     np.percentile(times, 95) * 1e3, scores['free_iou'],
                     scores['occupied_iou'], model_scores['free_iou'],
                     model_scores['occupied_iou']))
    lines = ['# Occupancy projection, 640x480 labels -> 200x200 grid at 0.05 m',
             '', f'Machine: {machine_description()}, numpy {np.__version__}; '
             f'{args.repeats} runs per frame.', '',
             '| frame seed | tables built (ms, once) | p50 (ms) | p95 (ms) | free IoU | '
             'occupied IoU | model: free IoU | model: occupied IoU |',
             '|---|---|---|---|---|---|---|---|']
    lines += [f'| {s} | {b:.0f} | {p50:.2f} | {p95:.2f} | {f:.1f} | {o:.1f} | {mf:.1f} | '
              f'{mo:.1f} |' for s, b, p50, p95, f, o, mf, mo in rows]
    all_p50 = statistics.median([r[2] for r in rows])
    lines += ['', f'Median p50 over frames: {all_p50:.2f} ms. Ground-truth labels in: mean '
              f'free IoU {np.mean(free):.1f}, mean occupied IoU {np.mean(occupied):.1f}. '
              f'Shipped model ({args.model.name}) labels in: mean free IoU '
              f'{np.mean(model_free):.1f}, mean occupied IoU {np.mean(model_occupied):.1f}.']
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
