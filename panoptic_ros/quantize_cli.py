"""panoptic-ros-quantize: the INT8 model of a checkpoint, calibrated on rendered frames.

  panoptic-ros-quantize --model MODEL --data ROOT --split SPLIT [--num 200]
      [--flavour cpu|tensorrt] [--float-first N] [--convolutions-only] [--moving-average]
      [--float-predictors] [--keep-float NODE ...] [--input-size W H] [--out FILE]

Reads the first --num camera images of a COCO-panoptic split (a split apart from the one
the accuracy is measured on), quantises the network (core/quantization.py) and writes
`<model stem>.int8.onnx` next to the model (`.int8-tensorrt.onnx` for TensorRT), which the
backend `onnxruntime_int8` runs; with --input-size, the network at that input size (the
node's input_size parameter) into `<model stem>.<W>x<H>.int8.onnx`. The command, data,
frames, time and machine go into the file's metadata.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.data import CocoPanopticDataset
from panoptic_ros.core.machine import cpu_model
from panoptic_ros.core.quantization import FLAVOURS, int8_path, quantize_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--data', type=Path, required=True, help='COCO-panoptic root')
    parser.add_argument('--split', required=True)
    parser.add_argument('--num', type=int, default=200, help='calibration frames')
    parser.add_argument('--flavour', choices=FLAVOURS, default='cpu')
    parser.add_argument('--keep-float', nargs='*', default=[], metavar='NODE',
                        help='ONNX node names to leave in float (a layer that quantises badly)')
    parser.add_argument('--float-first', type=int, default=0, metavar='N',
                        help='leave the first N convolutions (the encoder\'s stem) in float '
                             '(benchmarks/bench_quantization.py measures what each N gains and '
                             'costs on this CPU; it matters most on x86 without VNNI)')
    parser.add_argument('--convolutions-only', action='store_true',
                        help='quantise the convolutions alone (a ReLU or ReLU6 right after '
                             "one becomes its output's range); the ops between them (GroupNorm, "
                             'additions, resizes) compute in float '
                             '(benchmarks/bench_quantization.py measures what it gains and costs)')
    parser.add_argument('--moving-average', action='store_true',
                        help="activation ranges: the mean of each frame's min and max, not "
                             'the extremes over all frames '
                             '(benchmarks/bench_quantization.py measures what it gains)')
    parser.add_argument('--float-predictors', action='store_true',
                        help="leave each branch's last convolution in float (class and box "
                             'outputs, semantic logits, heatmap and offsets) '
                             '(benchmarks/bench_int8_files.py compares the files)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='network input size, if not the one the model was trained at')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    model, _ = load_checkpoint(args.model)
    if args.input_size:
        try:
            model = model.at_input_size(args.input_size)
        except ValueError as exc:
            sys.exit(f'--input-size: {exc}')
    mc = model.config
    dataset = CocoPanopticDataset(args.data, args.split, mc.input_size, mc.mean, mc.std)
    count = min(args.num, len(dataset))
    if count < 1:
        sys.exit(f'{args.data}/{args.split} has no images to calibrate on')
    out = args.out or int8_path(args.model, args.flavour, args.input_size)
    started = time.perf_counter()
    command = 'panoptic-ros-quantize ' + ' '.join(sys.argv[1:] if argv is None else argv)
    quantize_model(model, (dataset.load(i)[0] for i in range(count)), out, args.flavour,
                   keep_float=args.keep_float, float_first=args.float_first,
                   convolutions_only=args.convolutions_only,
                   moving_average=args.moving_average, float_predictors=args.float_predictors,
                   record={'command': command, 'data': f'{args.data}/{args.split}',
                           'machine': f'{cpu_model()}, Python {platform.python_version()}'})
    print(f'wrote {out} ({count} calibration frames, {time.perf_counter() - started:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
