"""Benchmark: the ablation table of the network choices, trained models side by side.

Each row is a trained checkpoint, run as the node runs it (onnxruntime fp32, highest_confidence
head) at its score threshold, possibly changed at inference time: a larger network input than
it was trained at, or LPSNet's border-ness left out of the detection score. For each row: PQ,
PQ_th, PQ_st, box AP (published detections) and ranked box AP (COCO protocol, scores >= 0.05)
on the val split and on the crowded low-camera split, and the network's
CPU latency at its input size (--rounds interleaved rounds of --repeats runs, median and range
of the rounds' p50, so the machine's drift hits every row alike). The training each row had
(iterations, frames, stages) comes from the checkpoint's metadata. Where a row lists several
thresholds, the one with the best val PQ is scored on the crowded split and reported.
The Pyramid Pooling Module and the center heatmap were trained in from stage 2 on; their rows
(`make model-ablation`) take the shipped weights, switch the branch off and train one more
epoch, beside a control that trains the same epoch with every branch: what the network loses
without the branch once it has adapted, not a separate training from ImageNet. The zoom-in
augmentation row trains the same epoch with the data option `zoom: [0.5, 2.0]`; the
close-range and driving rows train three epochs on `train` and a second 3000-frame split.

Usage: python benchmarks/bench_ablation.py [--limit N] [--rounds 3] [--repeats 20]
           [--val-root data/sim320] [--crowded-root data/sim_crowded_low]
           [--only LABEL_TEXT ...] [--out benchmarks/results/ablation_cpu.md]
"""

import argparse
import copy
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

from common import interleaved_p50s, machine_description, write_result
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint, read_metadata
from panoptic_ros.core.evaluation import evaluate_pipeline, summary_line
from panoptic_ros.core.head import PanopticHeadConfig
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.settings import default_model_path

MODELS = Path(__file__).resolve().parents[1] / 'models'
STAGE = 'stages/panoptic_branches_sim_stage{}.safetensors'
ABLATION = 'stages/panoptic_branches_sim_ablation_{}.safetensors'   # make model-ablation
SHIPPED = default_model_path().name


@dataclasses.dataclass
class Row:
    label: str
    model: str                      # under models/
    thresholds: tuple               # score thresholds; the best on val is kept
    input_size: tuple = None        # (width, height) at inference; None: as trained
    borderness_score: bool = True   # LPSNet: confidence x border-ness (False: confidence)


ROWS = [
    Row('light: MobileNetV2 + RetinaNet', 'panoptic_light_sim.safetensors', (0.4,)),
    Row('EfficientNet-Lite0 + LPSNet box head + PPM + heatmap (stage 2)', STAGE.format(2),
        (0.25,)),
    Row('+ border-ness map, 1500 more iterations (stage 4)', STAGE.format(4), (0.2,)),
    Row('+ 6000 frames, 2250 more iterations (stage 5)', STAGE.format(5), (0.2,)),
    Row('+ 3000 more iterations (stage 6, shipped)', SHIPPED, (0.2,)),
    Row('shipped, border-ness left out of the score', SHIPPED, (0.2, 0.3, 0.4),
        borderness_score=False),
    Row('shipped + 375 iterations (control of the three rows below)', ABLATION.format('all'),
        (0.2,)),
    Row('shipped without the Pyramid Pooling Module + 375 iterations', ABLATION.format('no_ppm'),
        (0.2,)),
    Row('shipped without the center heatmap + 375 iterations', ABLATION.format('no_heatmap'),
        (0.2,)),
    Row('shipped + 375 iterations with zoom-in augmentation (half the frames, scale 1-2)',
        ABLATION.format('zoom'), (0.2,)),
    Row('shipped + 2250 iterations, half on 3000 close-range frames (objects 0.3-6 m ahead)',
        ABLATION.format('close'), (0.2,)),
    Row('shipped + 2250 iterations, half on 3000 frames seen from 0-8 m along the road',
        ABLATION.format('drive'), (0.2,)),
    Row('shipped + 1500 iterations on 6000 frames at the 384x288 input', STAGE.format('7_384'),
        (0.2,)),
    Row('shipped, 384x288 input (trained at 320x240)', SHIPPED, (0.2,), input_size=(384, 288)),
    Row('shipped, 448x336 input (trained at 320x240)', SHIPPED, (0.2,), input_size=(448, 336)),
    Row('shipped, 640x480 input (trained at 320x240)', SHIPPED, (0.2,), input_size=(640, 480)),
]


def load_row(row, threads):
    model, _ = load_checkpoint(MODELS / row.model)
    if row.input_size is not None:   # same weights, another (static) input size
        model = model.at_input_size(row.input_size)
    backend = make_backend('onnxruntime', copy.deepcopy(model), 'cpu', cache_dir=Path('.cache'),
                           threads=threads)
    return model, backend


def training_of(path):
    """'iterations on frames' of a checkpoint and the stages before it, from its metadata."""
    info = read_metadata(path).get('info', {})
    stages = info.get('stages', []) + [info]
    iterations = sum(s.get('iterations', 0) for s in stages)
    frames = max(s.get('train_images', 0) for s in stages)
    return f'{iterations} it, {frames} frames' + (f', {len(stages)} stages'
                                                  if len(stages) > 1 else '')


def score(backend, threshold, root, limit, borderness_score=True):
    pipeline = FramePipeline(backend, decode_config=DecodeConfig(
                                 score_threshold=threshold, borderness_score=borderness_score),
                             head_config=PanopticHeadConfig())
    return evaluate_pipeline(pipeline, root, 'val', limit=limit)


def cells(scores):
    pq = scores['pq']
    return (f"{pq['all']['pq']:.1f} | {pq['things']['pq']:.1f} | {pq['stuff']['pq']:.1f} | "
            f"{scores['box_ap']['ap']:.1f} | {scores['box_ap_ranked']['ap']:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--val-root', type=Path, default=Path('data/sim320'))
    parser.add_argument('--crowded-root', type=Path, default=Path('data/sim_crowded_low'))
    parser.add_argument('--limit', type=int, help='frames per split (default: all)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--only', nargs='+', metavar='TEXT',
                        help='only the rows whose label contains one of these texts')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/ablation_cpu.md'))
    args = parser.parse_args()
    rows = [row for row in ROWS if not args.only or any(t in row.label for t in args.only)]
    if not rows:
        raise SystemExit(f'no row label contains any of {args.only}')
    torch.set_num_threads(args.threads)
    machine = machine_description()
    loaded = [load_row(row, args.threads) for row in rows]
    timing = interleaved_p50s([backend for _, backend in loaded], args.rounds, args.repeats,
                              args.threads)
    lines = []
    for k, (row, (model, backend)) in enumerate(zip(rows, loaded)):
        val = {t: score(backend, t, args.val_root, args.limit, row.borderness_score)
               for t in row.thresholds}
        best = max(val, key=lambda t: val[t]['pq']['all']['pq'])
        crowded = score(backend, best, args.crowded_root, args.limit, row.borderness_score)
        print(f'{row.label} @ {best}: val {summary_line(val[best])}; crowded '
              f'{summary_line(crowded)}', flush=True)
        width, height = model.config.input_size
        p50 = timing[k]
        lines.append(f'| {row.label} | {training_of(MODELS / row.model)} | {width}x{height} | '
                     f'{best:g} | {cells(val[best])} | {cells(crowded)} | '
                     f'{statistics.median(p50):.1f} ({min(p50):.1f}–{max(p50):.1f}) |')
    images = args.limit or 'all'
    text = '\n'.join([
        '# Ablation: the network choices, trained models side by side', '',
        f'Machine: {machine}. onnxruntime fp32, highest_confidence head; val = '
        f'{args.val_root}/val, crowded = {args.crowded_root}/val (low camera, a crowd in every '
        f'scene), {images} frames each at 640x480. Latency: the network alone at the row\'s '
        f'input, {args.rounds} interleaved rounds of {args.repeats} runs, median (range) of '
        'the rounds\' p50.',
        f'Command: `python benchmarks/bench_ablation.py {" ".join(sys.argv[1:])}`', '',
        '| variant | training | input | score threshold | val PQ | PQ_th | PQ_st | box AP | '
        'ranked AP | crowded PQ | PQ_th | PQ_st | box AP | ranked AP | network p50 ms |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
        *lines, ''])
    write_result(text, args.out)


if __name__ == '__main__':
    main()
