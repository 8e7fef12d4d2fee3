"""Benchmark: INT8 files of one model side by side (scores and network time), beside fp32.

Compares files as they are, made however they were made: the shipped INT8 file against the
same file at an earlier git revision (`REV:PATH` reads it with `git show`), or any QDQ files
of the same weights. Each file must be the onnxruntime INT8 model of --model at --input-size
(the node's default unless given; checked by its metadata). Scores every file on the
split(s) at the node's decoding and head defaults, then times the networks in interleaved
rounds so that the machine's drift hits every one alike. Prints a table, writes it to --out.

Usage: python benchmarks/bench_int8_files.py --files 7cfdeee:models/X.int8.onnx
           models/X.int8.onnx [--model MODEL] [--splits data/sim320:val
           data/sim_crowded_low:val] [--seeds 11 12 13 14 15] [--rounds 7]
           [--out benchmarks/results/int8_files_cpu.md]
--splits with no split: the timing alone.
"""

import argparse
import copy
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile

import torch

from bench_demo_sequence import sequence_cells, sequence_frames
from common import (add_split_and_timing_arguments, interleaved_p50s,
                    machine_description, score_cell, score_on_splits, split_headers,
                    write_result)
from panoptic_ros.core.backends import make_backend, OnnxRuntimeBackend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.quantization import check_int8
from panoptic_ros.core.settings import default_model_path, PARAMETERS


def materialise(spec, scratch):
    """A file path for `spec`: PATH as it is, or REV:PATH written from git into scratch."""
    revision, sep, path = spec.partition(':')
    if not sep:
        return Path(spec)
    out = Path(scratch) / f'{revision}_{Path(path).name}'
    out.write_bytes(subprocess.run(['git', 'show', f'{revision}:{path}'], check=True,
                                   capture_output=True).stdout)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--files', nargs='+', required=True, metavar='[REV:]PATH')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        default=PARAMETERS['input_size'].default)
    parser.add_argument('--seeds', type=int, nargs='*', default=[], metavar='SEED',
                        help='also score the sim driving sequences of these seeds (11: the '
                             "demo's), each one's things PQ and all pooled")
    add_split_and_timing_arguments(parser, 7, 'benchmarks/results/int8_files_cpu.md')
    args = parser.parse_args()
    sequences = [sequence_frames(seed)[1] for seed in args.seeds]
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        paths = [materialise(spec, scratch) for spec in args.files]
        sized = model.at_input_size(tuple(args.input_size))
        backends = [('fp32', make_backend('onnxruntime', copy.deepcopy(sized), 'cpu',
                                          cache_dir=Path('.cache'), threads=args.threads))]
        for spec, path in zip(args.files, paths):
            meta = check_int8(path, sized)
            backend = OnnxRuntimeBackend(path, sized.config, sized.anchors(),
                                         threads=args.threads, cache_dir=scratch)
            backends.append((f'INT8 `{spec}` (convolutions only: '
                             f'{meta.get("convolutions_only", False)}, mean ranges: '
                             f'{meta.get("moving_average", False)}, predictors in float: '
                             f'{meta.get("float_predictors", False)}, in float: '
                             f'{len(meta.get("kept_float", []))} convolutions)', backend))
        rows = [(label, score_on_splits(label, backend, args.splits))
                for label, backend in backends]
        sequence_rows = [sequence_cells(FramePipeline(backend), sequences) if sequences else []
                         for _, backend in backends]
        for (label, _), cells in zip(backends, sequence_rows):
            if cells:
                print(f'{label}, sequences: {cells}', flush=True)
        p50s = interleaved_p50s([b for _, b in backends], args.rounds, args.repeats,
                                args.threads)
    header = split_headers(args.splits)
    if sequences:
        header += [f'sequences {", ".join(map(str, args.seeds))}: things PQ', 'mean',
                   'pooled PQ / PQ_th (thing segments matched / false / missed)']
    lines = [f'# INT8 files side by side: {args.model.name}, input '
             '{}x{}'.format(*sized.config.input_size), '',
             f'Machine: {machine_description()}. onnxruntime; decoding and head at the node\'s '
             f'defaults ({DecodeConfig()}, overlap policy '
             f'{PARAMETERS["overlap_policy"].default}). Network: p50 of each interleaved '
             f'round, median (range) over {args.rounds} rounds of {args.repeats} runs; the '
             'last column is each file\'s p50 over the first INT8 file\'s, median over the '
             'rounds.',
             f'Command: `python benchmarks/bench_int8_files.py {" ".join(sys.argv[1:])}`', '',
             '| ' + ' | '.join(['network', *header, 'network p50 (ms)', 'time ratio']) + ' |',
             '|---' * (3 + len(header)) + '|']
    for k, ((label, scores), sequence, rounds) in enumerate(zip(rows, sequence_rows, p50s)):
        cells = [score_cell(scores[split]) for split in args.splits] + sequence
        time = f'{statistics.median(rounds):.1f} ({min(rounds):.1f}–{max(rounds):.1f})'
        ratio = '' if k == 0 else \
            f'{statistics.median(a / b for a, b in zip(rounds, p50s[1])):.3f}'
        lines.append('| ' + ' | '.join([label, *cells, time, ratio]) + ' |')
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
