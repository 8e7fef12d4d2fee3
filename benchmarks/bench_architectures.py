"""Benchmark: network latency of the architecture options, side by side in one run.

For each variant (encoder, box head, Pyramid Pooling Module, center heatmap) an untrained
network of the light model's size (weights do not change the time) is exported to ONNX and
run by onnxruntime (1 torch thread, as in panoptic_node) on a 320 x 240 input: --rounds
rounds, each timing every variant in turn (--repeats runs each), so the machine's drift hits
all variants alike. The table gives the median over rounds of each round's p50 (and the
range), the ratio to the first variant, the parameter count and the ONNX file size.

Usage: python benchmarks/bench_architectures.py [--repeats 30] [--rounds 3] [--threads 2]
           [--out benchmarks/results/architectures_cpu.md]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from common import interleaved_p50s, machine_description, write_result
from panoptic_ros.core.backends import export_onnx, OnnxRuntimeBackend
from panoptic_ros.core.model import SingleShotPanoptic
from panoptic_ros.core.sim.taxonomy import default_model_config

VARIANTS = [
    ('light model (MobileNetV2, RetinaNet)', {}),
    ('EfficientNet-Lite0', dict(encoder='efficientnet_lite0')),
    ('MobileNetV2 + LPSNet box head', dict(box_head='lpsnet')),
    ('MobileNetV2 + PPM', dict(ppm=True)),
    ('MobileNetV2 + center heatmap', dict(center_heatmap=True)),
    ('EfficientNet-Lite0 + every branch', dict(encoder='efficientnet_lite0', box_head='lpsnet',
                                               ppm=True, center_heatmap=True)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', type=Path,
                        default=Path(__file__).parent / 'results' / 'architectures_cpu.md')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, options) in enumerate(VARIANTS):
            torch.manual_seed(0)
            model = SingleShotPanoptic(default_model_config(**options)).eval()
            onnx_path = export_onnx(model, Path(tmp) / f'{k}.onnx')
            backend = OnnxRuntimeBackend(onnx_path, model.config, model.anchors(),
                                         threads=args.threads)
            params = sum(p.numel() for p in model.parameters())
            runs.append((name, backend, params, onnx_path.stat().st_size))
        width, height = runs[0][1].model_config.input_size
        timing = interleaved_p50s([backend for _, backend, _, _ in runs], args.rounds,
                                  args.repeats, args.threads)
    base = statistics.median(timing[0])
    lines = [f'# Network latency of the architecture options (onnxruntime, {width}x{height} '
             'input)', '',
             f'Machine: {machine}; {args.rounds} rounds of {args.repeats} runs per variant, '
             'interleaved; untrained weights (the time does not depend on them).',
             f'Command: `python benchmarks/bench_architectures.py {" ".join(sys.argv[1:])}`',
             '', '| variant | network p50 ms (range over rounds) | ratio to the first | '
             'parameters (M) | ONNX MB |', '|---|---|---|---|---|']
    for (name, _, params, size), p50s in zip(runs, timing):
        median = statistics.median(p50s)
        lines.append(f'| {name} | {median:.1f} ({min(p50s):.1f}–{max(p50s):.1f}) | '
                     f'{median / base:.2f} | {params / 1e6:.2f} | {size / 1e6:.1f} |')
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
