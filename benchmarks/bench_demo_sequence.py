"""Benchmark: the demo's sim sequence scored without ROS, per backend and setting, per class.

`make demo` scores what panoptic_node publishes for the 60-frame demo sequence (seed 11). This
runs the same frames through the same pipeline in one process, for several backends, input
sizes and score settings side by side, and lists each thing class's matches, false positives
and misses. PQ averages over the classes that occur in the ground truth *or* the predictions
(the COCO panoptic rule), so on a sequence with four thing instances one false detection of a
class that is not in the scene adds a class at PQ 0: the per-class rows show where the things
score comes from. Accuracy only (no timing): it may share the CPU.

Usage: python benchmarks/bench_demo_sequence.py [--model MODEL] [--seed 11 | --sequence DIR]
           [--backends onnxruntime ...] [--policies POLICY ...]
           [--out benchmarks/results/demo_sequence_cpu.md]
--policies: the node's setting (first row) with each of these overlap policies instead.
"""

import argparse
import copy
import dataclasses
from pathlib import Path
import sys

import numpy as np
import torch

from common import machine_description, write_result
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.evaluation import predicted_segments
from panoptic_ros.core.head import learned, PanopticHeadConfig
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.metrics import PanopticEvaluator
from panoptic_ros.core.settings import default_model_path, PARAMETERS
from panoptic_ros.core.sim.sequence import render_sequence, Sequence
from panoptic_ros.core.sim.taxonomy import CLASSES
from panoptic_ros.core.sim.world import SimConfig
from panoptic_ros.ros.demo import DEMO_SEED


NODE_SIZE = tuple(PARAMETERS['input_size'].default)
NODE_POLICY = PARAMETERS['overlap_policy'].default


@dataclasses.dataclass
class Row:
    backend: str
    input_size: tuple = None        # None: as trained
    score_threshold: float = DecodeConfig.score_threshold
    borderness_score: bool = DecodeConfig.borderness_score
    policy: str = NODE_POLICY

    def label(self):
        size = 'trained size' if self.input_size is None else '{}x{}'.format(*self.input_size)
        policy = '' if self.policy == NODE_POLICY else f', {self.policy}'
        return (f'{self.backend}, {size}, threshold {self.score_threshold:g} on '
                + ('confidence x border-ness' if self.borderness_score else 'confidence')
                + policy)


# the node's defaults first (its input size), then the trained size, confidence alone as the
# score (at 0.35 and at the threshold of best val PQ, 0.4), then a larger input
ROWS = [Row('onnxruntime_int8', input_size=NODE_SIZE), Row('onnxruntime', input_size=NODE_SIZE),
        Row('onnxruntime_int8'), Row('onnxruntime'),
        Row('onnxruntime_int8', score_threshold=0.35, borderness_score=False),
        Row('onnxruntime', score_threshold=0.35, borderness_score=False),
        Row('onnxruntime_int8', score_threshold=0.4, borderness_score=False),
        Row('onnxruntime', score_threshold=0.4, borderness_score=False),
        Row('onnxruntime_int8', input_size=(448, 336)),
        Row('onnxruntime', input_size=(448, 336))]


CATEGORIES = [{'id': c.id, 'name': c.name, 'isthing': c.is_thing} for c in CLASSES]


def sequence_frames(seed, folder=None):
    """(Sequence, its frames): the 60-frame sim sequence of `seed` in `folder` (default
    out/demo/sequence_<seed>_60), rendered there as the demo renders its own if missing."""
    folder = folder or Path(f'out/demo/sequence_{seed}_60')
    if not (folder / 'sequence.json').is_file():
        render_sequence(folder, seed, 60, fps=10.0, config=SimConfig())
    sequence = Sequence(folder)
    return sequence, [sequence[k] for k in range(len(sequence))]


def score(pipeline, frames, categories, also=()):
    """PQ of `pipeline` on `frames`; each frame is also added to the evaluators in `also`
    (for example one that pools several sequences)."""
    evaluator = PanopticEvaluator({c['id']: c for c in categories})
    for frame in frames:
        ids, segments = predicted_segments(pipeline(np.ascontiguousarray(frame['rgb'])),
                                           categories)
        truth = {s['id']: s for s in frame['segments']}
        for each in (evaluator, *also):
            each.add(frame['panoptic'], truth, ids, segments)
    return evaluator.panoptic_quality()


def score_sequences(pipeline, sequences):
    """(things PQ of each sequence in `sequences` (lists of frames), their pooled panoptic
    quality, (matched, false, missed) thing segments pooled): all frames pooled in one
    evaluation, whose thing PQ one stray detection moves far less than one sequence's."""
    pooled = PanopticEvaluator({c['id']: c for c in CATEGORIES})
    things = [score(pipeline, frames, CATEGORIES, also=[pooled])['things']['pq']
              for frames in sequences]
    pq = pooled.panoptic_quality()
    counts = tuple(sum(c[k] for c in pq['per_class'].values() if c['isthing'])
                   for k in ('tp', 'fp', 'fn'))
    return things, pq, counts


def sequence_cells(pipeline, sequences):
    """The table cells of score_sequences: things PQ per sequence, their mean, pooled
    'PQ / PQ_th (matched / false / missed)'."""
    things, pq, counts = score_sequences(pipeline, sequences)
    return [', '.join(f'{t:.1f}' for t in things), f'{np.mean(things):.1f}',
            f'{pq["all"]["pq"]:.1f} / {pq["things"]["pq"]:.1f} ({counts[0]} / {counts[1]} / '
            f'{counts[2]})']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--seed', type=int, default=DEMO_SEED,
                        help="the sim sequence's seed (default: the demo's)")
    parser.add_argument('--sequence', type=Path,
                        help='default: out/demo/sequence_<seed>_60, rendered once if missing')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--backends', nargs='+', help='only the settings of these backends '
                        '(onnxruntime for a checkpoint without an INT8 file)')
    parser.add_argument('--policies', nargs='+', choices=PARAMETERS['overlap_policy'].choices,
                        help="instead of the settings: the node's, with each of these overlap "
                             'policies')
    parser.add_argument('--out', type=Path,
                        default=Path('benchmarks/results/demo_sequence_cpu.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.sequence = args.sequence or Path(f'out/demo/sequence_{args.seed}_60')
    sequence, frames = sequence_frames(args.seed, args.sequence)
    categories = CATEGORIES
    things = [c.name for c in CLASSES if c.is_thing]
    instances = {s['id'] for f in frames for s in f['segments'] if s['is_thing']}
    model, _ = load_checkpoint(args.model)
    title = 'The demo sequence' if sequence.meta['seed'] == DEMO_SEED else 'A sim driving sequence'
    lines = [f'# {title} without ROS ({args.model.name})', '',
             f"Sequence {args.sequence} (seed {sequence.meta['seed']}, {len(frames)} frames, "
             f'{len(instances)} thing '
             f'instances), {NODE_POLICY} head unless a row names another '
             f'overlap policy, cross_class_iou {DecodeConfig.cross_class_iou:g} (1 = off). '
             'Per thing class: PQ (matched / false '
             'positives / missed segments over all frames); "-" where the class is in neither '
             'the ground truth nor the predictions (left out of the mean).', '',
             f'Command: `python benchmarks/bench_demo_sequence.py {" ".join(sys.argv[1:])}`', '',
             '| setting | PQ | PQ_th | PQ_st | ' + ' | '.join(things) + ' |',
             '|---' * (4 + len(things)) + '|']
    rows = [row for row in ROWS if not args.backends or row.backend in args.backends]
    if args.policies:
        rows = [dataclasses.replace(rows[0], policy=policy) for policy in args.policies]
    load_learned = learned.loader_for(args.model, model.config.classes)
    for row in rows:
        sized = model if row.input_size is None else model.at_input_size(row.input_size)
        backend = make_backend(row.backend, copy.deepcopy(sized), 'cpu', cache_dir=Path('.cache'),
                               threads=args.threads, model_path=args.model)
        if backend.name != row.backend:
            raise SystemExit(f'{row.backend} is not available for {args.model}')
        decode = DecodeConfig(score_threshold=row.score_threshold,
                              borderness_score=row.borderness_score)
        pipeline = FramePipeline(backend, decode, PanopticHeadConfig(policy=row.policy),
                                 learned=load_learned)
        pq = score(pipeline, frames, categories)
        per_class = {c['name']: c for c in pq['per_class'].values()}
        cells = [f"{per_class[n]['pq']:.1f} ({per_class[n]['tp']}/{per_class[n]['fp']}/"
                 f"{per_class[n]['fn']})" if n in per_class else '-' for n in things]
        lines.append(f"| {row.label()} | {pq['all']['pq']:.1f} | {pq['things']['pq']:.1f} | "
                     f"{pq['stuff']['pq']:.1f} | " + ' | '.join(cells) + ' |')
        print(lines[-1], flush=True)
    lines += ['', f'Machine: {machine_description()}.', '']
    write_result('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
