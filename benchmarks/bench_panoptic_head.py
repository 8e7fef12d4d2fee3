"""Benchmark: panoptic head latency. Prints a table and writes it to a file.

For each input size, head resolution, number of detection slots and overlap policy: median
and p95 latency of PanopticHead.forward over random network outputs (every slot a valid
detection, boxes up to 30 % of the image side) with 11 classes (5 stuff, 6 things).
'quarter' runs at the logits' 1/4 resolution and upsamples the labels; 'full' upsamples the
logits and runs at input resolution. On CUDA the time includes torch.cuda.synchronize();
--compile adds torch.compile(mode='reduce-overhead') (CUDA graphs). --forms: the head's fast
CPU form and its reference form, side by side in one run (on CUDA both are the reference form).

Usage: python benchmarks/bench_panoptic_head.py [--device cpu|cuda] [--threads 2]
           [--repeats 20] [--detections 20 100] [--full-res] [--compile]
           [--forms fast reference]
           [--out benchmarks/results/panoptic_head_<device>.md]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import machine_description
from panoptic_ros.core.head import FORMS, POLICIES, PanopticHead, PanopticHeadConfig
from panoptic_ros.core.head.learned import MaskRefinement, SpatialRankingModule
from panoptic_ros.core.head.policies import REGISTRY

IS_THING = [False] * 5 + [True] * 6
SIZES = [(480, 640), (576, 864), (720, 1280)]


def make_inputs(height, width, device, max_detections=100, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = height // 4, width // 4
    sem_logits = torch.randn(len(IS_THING), h, w, generator=gen)
    offsets = torch.randn(2, h, w, generator=gen) * 10
    xy = torch.rand(max_detections, 2, generator=gen) * torch.tensor([width, height])
    wh = torch.rand(max_detections, 2, generator=gen) * torch.tensor([width, height]) * 0.3
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(max_detections, generator=gen)
    classes = torch.randint(5, 11, (max_detections,), generator=gen)
    valid = torch.ones(max_detections, dtype=torch.bool)
    return [t.to(device) for t in (sem_logits, offsets, boxes, scores, classes, valid)]


def make_heatmap(height, width, device, max_detections=100, seed=0):
    """A center heatmap [1, h, w] with one peak per detection (center_grouping's input)."""
    gen = torch.Generator().manual_seed(seed + 1)
    h, w = height // 4, width // 4
    heatmap = torch.rand(1, h, w, generator=gen) * 0.05
    rows = torch.randint(0, h, (max_detections,), generator=gen)
    cols = torch.randint(0, w, (max_detections,), generator=gen)
    heatmap[0, rows, cols] = 0.5 + 0.5 * torch.rand(max_detections, generator=gen)
    return heatmap.to(device)


def make_borderness(height, width, device, seed=0):
    """A predicted border-ness map [1, h, w] in [0, 1] (closest_borderness's input)."""
    gen = torch.Generator().manual_seed(seed + 2)
    return torch.rand(1, height // 4, width // 4, generator=gen).to(device)


def make_learned(policy, device, seed=0):
    """The policy's learned part at its initialisation (its cost does not depend on the
    weights), or None."""
    torch.manual_seed(seed)
    things = sum(IS_THING)
    module = {'spatial_ranking': lambda: SpatialRankingModule(things),
              'refined': lambda: MaskRefinement(things, len(IS_THING))}.get(
        REGISTRY[policy].learned)
    return None if module is None else module().to(device)


def time_head(fn, device, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--detections', type=int, nargs='+', default=[20, 100])
    parser.add_argument('--full-res', action='store_true',
                        help="also run the head at input resolution ('logits' upsampling)")
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--forms', nargs='+', choices=FORMS, default=['fast'])
    parser.add_argument('--out', type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / 'results' / \
        f'panoptic_head_{args.device}{"_compiled" if args.compile else ""}.md'

    rows = []
    header = '| input (H x W) | head resolution | detections | policy | form | p50 ms | p95 ms |'
    print(machine_description(args.device))
    print(header)
    modes = [('quarter', 'labels')] + ([('full', 'logits')] if args.full_res else [])
    for height, width in SIZES:
        for resolution, upsample in modes:
            for detections in args.detections:
                inputs = make_inputs(height, width, args.device, detections)
                heatmap = make_heatmap(height, width, args.device, detections)
                borderness = make_borderness(height, width, args.device)
                for policy, form in [(p, f) for p in POLICIES for f in args.forms]:
                    head = PanopticHead(IS_THING, PanopticHeadConfig(policy=policy), form,
                                        make_learned(policy, args.device))
                    head = head.to(args.device)
                    forward = head.forward
                    if args.compile:
                        forward = torch.compile(head.forward, mode='reduce-overhead')

                    def run():
                        with torch.inference_mode():
                            return forward(*inputs, image_size=(height, width),
                                           upsample=upsample, center_heatmap=heatmap,
                                           borderness_map=borderness)

                    p50, p95 = time_head(run, args.device, args.repeats)
                    row = f'| {height} x {width} | {resolution} | {detections} | {policy} | ' \
                          f'{form} | {p50:.2f} | {p95:.2f} |'
                    print(row, flush=True)
                    rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = ' '.join(['python benchmarks/bench_panoptic_head.py', f'--device {args.device}',
                        f'--threads {args.threads}', f'--repeats {args.repeats}',
                        '--detections', *map(str, args.detections), '--forms', *args.forms] +
                       (['--full-res'] if args.full_res else []) +
                       (['--compile'] if args.compile else []))
    out.write_text(
        f'# Panoptic head latency ({args.device}{", torch.compile" if args.compile else ""})'
        f'\n\nMachine: {machine_description(args.device)}.\n'
        f'Every detection slot valid, {len(IS_THING)} classes, random logits; '
        f'{args.repeats} timed runs after 3 warm-up runs. quarter = head at the logits\' 1/4 '
        f'resolution, labels upsampled; full = logits upsampled, head at input resolution.\n'
        f'Command: `{command}`\n\n'
        f'{header}\n|---|---|---|---|---|---|---|\n' + '\n'.join(rows) + '\n')
    print(f'written to {out}')


if __name__ == '__main__':
    main()
