"""Benchmark: which convolutions an INT8 model keeps in float, measured on this CPU.

onnxruntime runs a QDQ model's int8 convolutions with uint8 activations and int8 weights
(U8S8). On an x86 CPU without VNNI (AVX2 only: many AMD EPYC and Ryzen, older Intel) its
kernels add pairs of uint8 x int8 products in 16 bits, which saturate where large
activations meet large weights of one sign; with VNNI the products are summed in 32 bits. So
one INT8 file can score lower on one CPU than on another. This quantises the model once per
--float-first value (the first N convolutions of the graph left in float, as
`panoptic-ros-quantize --float-first N` does) and per --quantise choice ('all': every op
onnxruntime quantises; 'conv': the convolutions alone, element-wise ops between them in float,
as `--convolutions-only` does) and per --ranges choice ('minmax': each activation's range
is its extremes over the calibration frames; 'mean': the mean of each frame's min and max, as
`--moving-average` does), scores each file on the split(s) and times the networks side by
side against fp32 (interleaved rounds). Files go to a scratch folder; the shipped ones are
not touched. Prints a table, writes it to --out.

Usage: python benchmarks/bench_quantization.py [--model MODEL] [--input-size 384 288]
           [--float-first 0 1 3 6] [--quantise all conv] [--ranges minmax mean]
           [--calib-root data/sim_calib --calib-split calib]
           [--splits data/sim320:val data/sim_crowded_low:val] [--rounds 5]
           [--out benchmarks/results/quantization_cpu.md]
--splits with no split: the timing alone.
"""

import argparse
import copy
import itertools
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from common import (add_split_and_timing_arguments, interleaved_p50s,
                    machine_description, score_cell, score_on_splits, split_headers,
                    write_result)
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.data import CocoPanopticDataset
from panoptic_ros.core.inference import DecodeConfig
from panoptic_ros.core.quantization import int8_path, quantize_model
from panoptic_ros.core.settings import default_model_path, PARAMETERS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, default=default_model_path())
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        default=PARAMETERS['input_size'].default)
    parser.add_argument('--float-first', type=int, nargs='+', default=[0, 1, 3, 6])
    parser.add_argument('--quantise', nargs='+', choices=('all', 'conv'), default=['all'],
                        help="which ops: 'all' quantisable ones, or 'conv'volutions only")
    parser.add_argument('--ranges', nargs='+', choices=('minmax', 'mean'), default=['minmax'],
                        help="activation ranges: 'minmax' over all frames, or the 'mean' of "
                             "each frame's min and max")
    parser.add_argument('--calib-root', type=Path, default=Path('data/sim_calib'))
    parser.add_argument('--calib-split', default='calib')
    parser.add_argument('--num', type=int, default=200, help='calibration frames')
    add_split_and_timing_arguments(parser, 5, 'benchmarks/results/quantization_cpu.md')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    sized = model.at_input_size(tuple(args.input_size))
    mc = sized.config
    calib = CocoPanopticDataset(args.calib_root, args.calib_split, mc.input_size, mc.mean, mc.std)
    frames = [calib.load(i)[0] for i in range(min(args.num, len(calib)))]
    with tempfile.TemporaryDirectory() as scratch:
        backends = [('fp32', make_backend('onnxruntime', copy.deepcopy(sized), 'cpu',
                                          cache_dir=Path('.cache'), threads=args.threads))]
        for ops, n, ranges in itertools.product(args.quantise, args.float_first, args.ranges):
            folder = Path(scratch) / f'{ops}_float_first_{n}_{ranges}'
            folder.mkdir()
            weights = folder / args.model.name
            shutil.copy(args.model, weights)
            quantize_model(sized, frames, int8_path(weights, input_size=mc.input_size),
                           cache_dir=folder, float_first=n, convolutions_only=ops == 'conv',
                           moving_average=ranges == 'mean')
            backend = make_backend('onnxruntime_int8', copy.deepcopy(sized), 'cpu',
                                   cache_dir=folder, threads=args.threads, model_path=weights)
            if backend.name != 'onnxruntime_int8':
                raise SystemExit(f'the INT8 file for --quantise {ops} --float-first {n} '
                                 f'--ranges {ranges} did not load')
            which = 'convolutions only' if ops == 'conv' else 'all ops'
            how = ', ranges: mean of per-frame min / max' if ranges == 'mean' else ''
            backends.append((f'INT8 ({which}), first {n} convolutions in float{how}', backend))
        rows = [(label, score_on_splits(label, backend, args.splits))
                for label, backend in backends]
        p50s = interleaved_p50s([b for _, b in backends], args.rounds, args.repeats,
                                args.threads)
    header = split_headers(args.splits)
    lines = [f'# INT8 quantisation on this CPU: {args.model.name}, input '
             '{}x{}'.format(*mc.input_size), '',
             f'Machine: {machine_description()}. Calibration: {len(frames)} frames '
             f'of {args.calib_root}/{args.calib_split}; onnxruntime; decoding and head at the '
             f'node\'s defaults ({DecodeConfig()}, overlap policy '
             f'{PARAMETERS["overlap_policy"].default}). Network: p50 of each interleaved '
             'round, median (range) '
             f'over {args.rounds} rounds of {args.repeats} runs.',
             f'Command: `python benchmarks/bench_quantization.py {" ".join(sys.argv[1:])}`', '',
             '| ' + ' | '.join(['network', *header, 'network p50 (ms)']) + ' |',
             '|---' * (2 + len(args.splits)) + '|']
    for (label, scores), rounds in zip(rows, p50s):
        cells = [score_cell(scores[split]) for split in args.splits]
        time = f'{statistics.median(rounds):.1f} ({min(rounds):.1f}–{max(rounds):.1f})'
        lines.append('| ' + ' | '.join([label, *cells, time]) + ' |')
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
