"""Benchmark: occupancy projection. Prints a table and writes it to a file.

Ground-truth panoptic labels of rendered sim frames (640x480, seeds 100-139, apart from the
calibration seeds of the footprint priors) -> 200x200 grid at 5 cm with the class mapping and
footprint priors of config/panoptic.yaml: median and p95 of OccupancyProjector.__call__ (the
per-frame work; the lookup tables are built once per camera model and extrinsics, timed
separately), the free / occupied IoU against the simulator's ground-truth grid with the
ground-truth labels in and with the shipped model's labels in (its FramePipeline on the
rendered image, onnxruntime, default head settings); the
occupied IoU without footprint priors (each obstacle `obstacle_depth` deep behind its
contacts; its latency too), and by footprint_scale; and the
error of the things' ground positions (distance from their footprint's centre).

Usage: python benchmarks/bench_occupancy.py [--frames 40] [--repeats 50]
           [--model models/panoptic_branches_sim.safetensors]
           [--out benchmarks/results/occupancy_cpu.md]
"""

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from common import machine_description, write_result
from panoptic_ros.core.backends import configure_torch_threads, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.metrics import occupancy_scores
from panoptic_ros.core.settings import default_model_path, load_yaml_params, Settings
from panoptic_ros.core.sim.priors import projector_for
from panoptic_ros.core.sim.taxonomy import CLASSES
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

SCALES = (0.8, 0.9, 0.95, 1.0, 1.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/occupancy_cpu.md'))
    args = parser.parse_args()
    settings = Settings.from_params(load_yaml_params(Path('config/panoptic.yaml')))
    config = settings.occupancy_config([c.name for c in CLASSES], 1000)
    model, _ = load_checkpoint(args.model)
    backend = make_backend('onnxruntime', model, cache_dir=Path('.cache'))
    configure_torch_threads(backend)
    pipeline = FramePipeline(backend)
    rows, sweep, plain, position_errors = [], {s: [] for s in SCALES}, [], []
    plain_p50 = []
    for seed in range(100, 100 + args.frames):
        frame = render_random_frame(seed, SimConfig())
        start = time.perf_counter()
        projector = projector_for(frame, config)
        build = time.perf_counter() - start
        for _ in range(3):
            projector(frame.panoptic)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            grid, instances = projector(frame.panoptic)
            times.append(time.perf_counter() - start)
        scores = occupancy_scores(grid, frame.occupancy)
        footprints = dict(frame.footprints)
        position_errors += [float(np.hypot(*(np.asarray(footprints[k]).mean(0) - xy)))
                            for k, xy in instances.items() if k in footprints]
        predicted = pipeline(frame.rgb).panoptic.panoptic.numpy()
        model_scores = occupancy_scores(projector(predicted)[0], frame.occupancy)
        for scale in SCALES:
            scaled = projector_for(frame, dataclasses.replace(config, footprint_scale=scale))
            sweep[scale].append(occupancy_scores(scaled(frame.panoptic)[0],
                                                 frame.occupancy)['occupied_iou'])
        no_prior = projector_for(frame, dataclasses.replace(config, footprints={}))
        plain.append(occupancy_scores(no_prior(frame.panoptic)[0],
                                      frame.occupancy)['occupied_iou'])
        plain_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            no_prior(frame.panoptic)
            plain_times.append(time.perf_counter() - start)
        plain_p50.append(statistics.median(plain_times) * 1e3)
        rows.append((seed, build * 1e3, statistics.median(times) * 1e3,
                     np.percentile(times, 95) * 1e3, scores['free_iou'],
                     scores['occupied_iou'], model_scores['free_iou'],
                     model_scores['occupied_iou'], int((frame.occupancy == 100).sum())))
    table = np.array([r[1:] for r in rows], np.float64)
    mean = np.nanmean(table, 0)
    lines = ['# Occupancy projection, 640x480 labels -> 200x200 grid at 0.05 m', '',
             f'Machine: {machine_description()}, numpy {np.__version__}; {args.repeats} runs '
             f'per frame; config/panoptic.yaml (footprint_scale {config.footprint_scale}); '
             f'frames: seeds 100-{99 + args.frames}.', '',
             '| frame seed | tables built (ms, once) | p50 (ms) | p95 (ms) | free IoU | '
             'occupied IoU | model: free IoU | model: occupied IoU | occupied cells |',
             '|---|---|---|---|---|---|---|---|---|']
    lines += [f'| {s} | {b:.0f} | {p50:.2f} | {p95:.2f} | {f:.1f} | {o:.1f} | {mf:.1f} | '
              f'{mo:.1f} | {n} |' for s, b, p50, p95, f, o, mf, mo, n in rows]
    valid = np.isfinite(table[:, 4]).sum()
    lines += ['', f'Median p50 over frames: {np.median(table[:, 1]):.2f} ms (p95 over frames '
              f'of the per-frame p50: {np.percentile(table[:, 1], 95):.2f} ms). Ground-truth '
              f'labels in: mean free IoU {mean[3]:.1f}, mean occupied IoU {mean[4]:.1f} '
              f'({valid} frames with occupied cells). Shipped model ({args.model.name}) '
              f'labels in: mean free IoU {mean[5]:.1f}, mean occupied IoU {mean[6]:.1f}.', '',
              'Occupied IoU (ground-truth labels) by footprint_scale: ' +
              ', '.join(f'{s:g} {np.nanmean(v):.1f}' for s, v in sweep.items()) +
              f'; without footprint priors: {np.nanmean(plain):.1f} (median p50 '
              f'{np.median(plain_p50):.2f} ms in this run).', '',
              f'Ground position of things (ground-truth labels): distance from the footprint '
              f'centre median {np.median(position_errors):.2f} m, p90 '
              f'{np.percentile(position_errors, 90):.2f} m over {len(position_errors)} '
              f'things.']
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
