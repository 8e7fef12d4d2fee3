"""Benchmark: the decoder's cross-class semantic vote (``cross_class_iou``), on and off.

Per-class NMS lets the box head call one object by two classes (a table leg also called a
droid, one box each). With ``cross_class_iou`` below 1, two boxes of different classes that
overlap by more than that IoU are taken as one object and the semantic branch's majority
vote in their overlap keeps one (Panoptic-DeepLab's majority vote, applied to the boxes).
This scores each setting on the val split, the crowded low-camera split and five sim driving
sequences (seeds 11, the demo's, to 15): each sequence's things PQ, and all 300 frames pooled
in one evaluation, whose thing PQ a single stray detection moves far less than one
60-frame sequence's (where it adds a class at PQ 0). Accuracy only: it may share the CPU.

Usage: python benchmarks/bench_cross_class.py [--ious 1 0.7 0.5]
           [--backends onnxruntime onnxruntime_int8] [--seeds 11 12 13 14 15]
           [--model MODEL --input-size W H --score-threshold T]
           [--out benchmarks/results/cross_class_cpu.md]
"""

import argparse
import copy
from pathlib import Path
import sys

import torch

from bench_demo_sequence import sequence_cells, sequence_frames
from common import machine_description, SPLITS, write_result
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.evaluation import evaluate_pipeline
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.settings import default_model_path, PARAMETERS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--ious', type=float, nargs='+', default=[1.0, 0.7, 0.5])
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'onnxruntime_int8'])
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        default=PARAMETERS['input_size'].default)
    parser.add_argument('--score-threshold', type=float, default=DecodeConfig.score_threshold,
                        help='the light model scores best at 0.4')
    parser.add_argument('--splits', nargs='+', default=SPLITS, metavar='ROOT:SPLIT')
    parser.add_argument('--seeds', type=int, nargs='+', default=[11, 12, 13, 14, 15])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/cross_class_cpu.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sequences = {seed: sequence_frames(seed)[1] for seed in args.seeds}
    model, _ = load_checkpoint(args.model)
    sized = model.at_input_size(tuple(args.input_size))
    rows = []
    for name in args.backends:
        backend = make_backend(name, copy.deepcopy(sized), 'cpu', cache_dir=Path('.cache'),
                               threads=args.threads, model_path=args.model)
        if backend.name != name:
            raise SystemExit(f'{name} is not available for {args.model}')
        for iou in args.ious:
            pipeline = FramePipeline(backend, DecodeConfig(score_threshold=args.score_threshold,
                                                           cross_class_iou=iou))
            cells = []
            for split in args.splits:
                root, split_name = split.split(':')
                s = evaluate_pipeline(pipeline, Path(root), split_name)
                cells.append(f"{s['pq']['all']['pq']:.1f} / {s['pq']['things']['pq']:.1f} / "
                             f"{s['box_ap']['ap']:.1f}")
            cells += sequence_cells(pipeline, sequences.values())
            row = f'| {name} | {"off" if iou >= 1.0 else f"{iou:g}"} | ' + ' | '.join(cells) \
                + ' |'
            print(row, flush=True)
            rows.append(row)
    lines = [f'# Cross-class semantic vote: {args.model.name}, input '
             '{}x{}'.format(*args.input_size), '',
             f'Machine: {machine_description()}. Score threshold {args.score_threshold:g}; NMS '
             'and head at the node\'s defaults; cross_class_iou "off" is 1 (the vote never '
             'runs). Splits: PQ / PQ_th / '
             f'box AP. Sequences: seeds {", ".join(map(str, args.seeds))}, 60 frames each '
             '(rendered as the demo renders its own); things PQ per sequence, their mean, '
             'and every frame pooled in one evaluation: PQ / PQ_th (thing segments matched / '
             'false / missed).',
             f'Command: `python benchmarks/bench_cross_class.py {" ".join(sys.argv[1:])}`', '',
             '| backend | cross_class_iou | ' + ' | '.join(args.splits)
             + ' | sequences: things PQ | mean | pooled PQ / PQ_th |',
             '|---' * (5 + len(args.splits)) + '|'] + rows
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
