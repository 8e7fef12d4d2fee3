"""Benchmark: a model's scores on a val split at several detection score thresholds.

The decoder keeps a detection when its score passes ``score_threshold``: with LPSNet's box
head LPSNet's confidence x border-ness, a product of two probabilities, for which the
threshold that suits one probability (a RetinaNet head, or --confidence-only) is too strict.
This sweep measures PQ, SQ, RQ, PQ_th, PQ_st and box AP per threshold on one split with one
backend, so the node's default can be set from numbers. Prints a table, writes it to --out.

Usage: python benchmarks/bench_thresholds.py --model MODEL [--thresholds 0.2 0.3 0.4]
           [--confidence-only] [--backend onnxruntime] [--policy highest_confidence]
           [--val-root data/sim320 --val-split val] [--limit N]
           [--out benchmarks/results/thresholds_cpu.md]
"""

import argparse
import copy
import sys
from pathlib import Path

import torch

from common import machine_description, write_result
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.head import PanopticHeadConfig, POLICIES
from panoptic_ros.core.evaluation import evaluate_pipeline, summary_line
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.settings import default_model_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--thresholds', type=float, nargs='+', default=[0.2, 0.3, 0.4])
    parser.add_argument('--confidence-only', action='store_true',
                        help='score = class confidence alone (the node\'s borderness_score: '
                             'false)')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--policy', default=PanopticHeadConfig().policy, choices=POLICIES,
                        help='panoptic head overlap policy')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--val-root', type=Path, default=Path('data/sim320'))
    parser.add_argument('--val-split', default='val')
    parser.add_argument('--limit', type=int)
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/thresholds_cpu.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description()
    model, _ = load_checkpoint(args.model)
    backend = make_backend(args.backend, copy.deepcopy(model), 'cpu', cache_dir=Path('.cache'),
                           threads=args.threads, model_path=args.model)
    if backend.name != args.backend:
        raise SystemExit(f'{args.backend} is not available for {args.model}')
    pipeline = FramePipeline(backend, head_config=PanopticHeadConfig(policy=args.policy))
    rows = []
    for threshold in args.thresholds:
        swept = pipeline.reconfigured(DecodeConfig(score_threshold=threshold,
                                                   borderness_score=not args.confidence_only),
                                      pipeline.head.config)
        scores = evaluate_pipeline(swept, args.val_root, args.val_split, limit=args.limit)
        print(f'threshold {threshold}: {summary_line(scores)}')
        rows.append((threshold, scores))
    images = rows[0][1]['images']
    lines = [f'# Detection score threshold sweep: {args.model.name} ({model.config.encoder}, '
             f'box head {model.config.box_head})', '',
             f'Machine: {machine}; backend {args.backend}; {args.val_root}/{args.val_split}, '
             f'{images} images; panoptic head {pipeline.head.config.policy}; score = '
             + ('confidence alone.' if args.confidence_only else
                'confidence x border-ness with LPSNet\'s box head.'),
             f'Command: `python benchmarks/bench_thresholds.py {" ".join(sys.argv[1:])}`', '',
             'box AP: of the detections above the threshold (what the node publishes); ranked '
             'box AP: COCO protocol, every detection scoring >= 0.05 (the same at every '
             'threshold).', '',
             '| score threshold | PQ | SQ | RQ | PQ_th | RQ_th | PQ_st | box AP | AP50 | '
             'ranked box AP | ranked AP50 |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for threshold, scores in rows:
        pq = scores['pq']
        lines.append(f"| {threshold:g} | {pq['all']['pq']:.1f} | {pq['all']['sq']:.1f} | "
                     f"{pq['all']['rq']:.1f} | {pq['things']['pq']:.1f} | "
                     f"{pq['things']['rq']:.1f} | {pq['stuff']['pq']:.1f} | "
                     f"{scores['box_ap']['ap']:.1f} | {scores['box_ap']['ap50']:.1f} | "
                     f"{scores['box_ap_ranked']['ap']:.1f} | "
                     f"{scores['box_ap_ranked']['ap50']:.1f} |")
    best = max(rows, key=lambda row: row[1]['pq']['all']['pq'])
    lines += ['', f'Highest PQ at score threshold {best[0]:g}.']
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
