"""Benchmark: network latency per backend, and the model's scores on a val split.

640x480 camera frames (rendered sim frames) through Preprocessor + backend (the network
alone, raw outputs), and the whole FramePipeline (+ decode + panoptic head): --rounds rounds,
each timing every backend in turn (--repeats runs each), so that the machine's drift hits all
backends alike; the table gives the median over rounds of each round's p50 and p95, with the
range of the p50s. --val-root also evaluates the model (PQ / PQ_th / PQ_st / mIoU / box AP)
on that COCO-panoptic split with the fastest CPU backend (--score-all: with every backend).
onnxruntime_int8 runs the model's INT8 file (panoptic-ros-quantize). --input-size runs the
same weights at another network input size, as the node's input_size parameter does (with the
INT8 file made for that size where there is one). --score-threshold and --confidence-only set
the decoder as the node's score_threshold and borderness_score: false do. Prints a table,
writes it to --out.

Usage: python benchmarks/bench_network.py [--model models/panoptic_branches_sim.safetensors]
           [--backends torch torch_compile onnxruntime] [--device cpu] [--threads 2] [--repeats 30]
           [--rounds 3] [--input-size W H] [--score-threshold 0.2] [--confidence-only]
           [--val-root data/sim320 --val-split val] [--score-all]
           [--out benchmarks/results/network_cpu.md]
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine_description, write_result
from panoptic_ros.core.backends import configure_torch_threads, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.evaluation import evaluate_pipeline, summary_line
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.world import render_random_frame, SimConfig


def timed(fn, repeats, sync):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, float(np.percentile(times, 95)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--backends', nargs='+', default=['torch', 'torch_compile', 'onnxruntime'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='network input size (default: the one the model was trained at)')
    parser.add_argument('--score-threshold', type=float, default=DecodeConfig.score_threshold)
    parser.add_argument('--confidence-only', action='store_true',
                        help='score = class confidence alone (borderness_score: false)')
    parser.add_argument('--val-root', type=Path)
    parser.add_argument('--val-split', default='val')
    parser.add_argument('--score-all', action='store_true',
                        help='score every backend on the val split (default: the fastest)')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/network_cpu.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.model)
    if args.input_size:
        model = model.at_input_size(args.input_size)
    rgb = render_random_frame(5, SimConfig()).rgb
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)
    machine = machine_description(args.device)   # before a backend changes the thread count
    runs = []
    for name in args.backends:
        backend = make_backend(name, copy.deepcopy(model), args.device,
                               cache_dir=Path('.cache'), threads=args.threads,
                               model_path=args.model)
        decode = DecodeConfig(score_threshold=args.score_threshold,
                              borderness_score=not args.confidence_only)
        runs.append((backend, FramePipeline(backend, decode), {'net': [], 'full': []}))
    for _ in range(args.rounds):
        for backend, pipeline, times in runs:
            configure_torch_threads(backend, args.threads)   # as panoptic_node does
            x, _ = pipeline.preprocess(rgb)
            times['net'].append(timed(lambda: backend(x), args.repeats, sync))
            times['full'].append(timed(lambda: pipeline(rgb), args.repeats, sync))
            times['threads'] = torch.get_num_threads()

    def summary(rounds):   # (median p50, min p50, max p50, median p95) over rounds
        p50s = [r[0] for r in rounds]
        return (statistics.median(p50s), min(p50s), max(p50s),
                statistics.median(r[1] for r in rounds))

    rows = [(backend.name, times['threads'], summary(times['net']), summary(times['full']))
            for backend, _, times in runs]
    best = min(zip(runs, rows), key=lambda item: item[1][2][0])[0][1]
    width, height = model.config.input_size
    lines = [f'# Network latency: {args.model.name} ({model.config.encoder}, input '
             f'{width}x{height}), 640x480 camera frames', '',
             f'Machine: {machine}; {args.rounds} rounds of {args.repeats} runs per backend, '
             'interleaved. p50: median over rounds (range over rounds); p95: median over '
             'rounds.',
             f'Command: `python benchmarks/bench_network.py {" ".join(sys.argv[1:])}`', '',
             '| backend | torch threads | network p50 (ms) | network p95 (ms) | '
             'frame pipeline p50 (ms) | frame pipeline p95 (ms) |', '|---|---|---|---|---|---|']
    lines += [f'| {n} | {t} | {a[0]:.1f} ({a[1]:.1f}–{a[2]:.1f}) | {a[3]:.1f} | '
              f'{b[0]:.1f} ({b[1]:.1f}–{b[2]:.1f}) | {b[3]:.1f} |' for n, t, a, b in rows]
    lines.append('')
    lines.append('frame pipeline = preprocess (letterbox, normalise) + network + decode '
                 '(threshold, NMS) + panoptic head (highest_confidence) at 640x480. torch '
                 'threads: PyTorch\'s thread count during the row (1 next to onnxruntime, as '
                 'in panoptic_node: configure_torch_threads).')
    scored = [pipeline for _, pipeline, _ in runs] if args.score_all else [best]
    for pipeline in scored if args.val_root else []:
        scores = evaluate_pipeline(pipeline, args.val_root, args.val_split)
        pq = scores['pq']
        lines += ['', f'## Scores on {args.val_root}/{args.val_split} '
                  f'({scores["images"]} images, {pipeline.backend.name}, score threshold '
                  f'{args.score_threshold}, '
                  f'{"confidence alone" if args.confidence_only else "confidence x border-ness"})',
                  '',
                  '| PQ | SQ | RQ | PQ_th | PQ_st | mIoU | box AP | AP50 | ranked box AP |',
                  '|---|---|---|---|---|---|---|---|---|',
                  f"| {pq['all']['pq']:.1f} | {pq['all']['sq']:.1f} | {pq['all']['rq']:.1f} | "
                  f"{pq['things']['pq']:.1f} | {pq['stuff']['pq']:.1f} | {scores['miou']:.1f} | "
                  f"{scores['box_ap']['ap']:.1f} | {scores['box_ap']['ap50']:.1f} | "
                  f"{scores['box_ap_ranked']['ap']:.1f} |", '',
                  'Per class PQ: ' + ', '.join(
                      f"{c['name']} {c['pq']:.1f}" for c in pq['per_class'].values())]
        print(summary_line(scores))
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
