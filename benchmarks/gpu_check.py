"""GPU measurements in one command: CUDA tests, the paper's network, every head policy, the
shipped model's frame pipeline. Writes one results file (rewritten after each section, so a
run cut short keeps what it measured).

Sections, in this order:
  environment  GPU, driver, torch, CUDA
  tests        the CUDA tests (pytest -k cuda on test/test_cuda.py and test_panoptic_head.py)
  network      Weber et al.'s ResNet-50-FPN at 576 x 864, batch 1 (COCO's 133 classes, random
               weights): eager fp32, eager fp16, torch.compile + CUDA graphs fp16; then end to
               end (preprocess, network, decode, head) with the compiled network
  head         every overlap policy on CUDA at 1/4 of 576 x 864 and 1280 x 720 with 100
               detections: eager reference form and its CUDA-graph replay (a policy that
               synchronises with the host cannot be captured; that is reported, with the
               replay checked equal to eager where it can)
  pipeline     the shipped model's frame pipeline at 1280 x 720 on CUDA, stage medians

Needs torch, torchvision, numpy, opencv, safetensors and pytest; no ROS, no network, nothing
installed (run from the repository root with it on PYTHONPATH: benchmarks/gpu_check.sh).
`--smoke --device cpu` runs every section at toy sizes on the CPU (CUDA-only steps reported
as skipped), which is how the tests check this script before it meets a GPU.

Usage: benchmarks/gpu_check.sh [--out FILE] [--budget-s 420] [--repeats 50]
       benchmarks/gpu_check.sh --smoke --device cpu --out /tmp/gpu_check.md
"""

import argparse
import copy
from dataclasses import dataclass, field
import itertools
from pathlib import Path
import re
import statistics
import subprocess
import sys
import time
import traceback

import cv2
import numpy as np
import torch

from bench_panoptic_head import (IS_THING, make_borderness, make_heatmap, make_inputs,
                                 make_learned, time_head)
from common import machine_description
from panoptic_ros.core.backends import TorchBackend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.head import POLICIES, PanopticHead, PanopticHeadConfig
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.model import ModelConfig, SingleShotPanoptic
from panoptic_ros.core.settings import default_model_path

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / 'docs' / 'sim_frame_seed5.png'   # its left 640 x 480 panel is a camera frame
COCO_THINGS, COCO_STUFF = 80, 53                # COCO panoptic's classes, as in the paper
DETECTIONS = 100


@dataclass
class Sizes:
    """Image sizes (H, W) and repeat counts of one run."""
    network: tuple = (576, 864)
    head: tuple = ((576, 864), (720, 1280))
    pipeline: tuple = (720, 1280)
    repeats: int = 50
    warmup: int = 5
    frames: int = 40


SMOKE = Sizes(network=(128, 160), head=((96, 128),), pipeline=(120, 160), repeats=2,
              warmup=1, frames=2)


@dataclass
class Report:
    """The results file, rewritten whole after every section."""
    path: Path
    title: str
    sections: list = field(default_factory=list)

    def add(self, heading, lines):
        self.sections.append(f'## {heading}\n\n' + '\n'.join(lines) + '\n')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f'# {self.title}\n\n' + '\n'.join(self.sections))
        print(f'## {heading}\n' + '\n'.join(lines), flush=True)


def synchronize(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def camera_frame(height, width):
    """The shipped sim frame's camera panel, resized: uint8 RGB [height, width, 3]."""
    bgr = cv2.imread(str(FRAME))
    if bgr is None:
        raise FileNotFoundError(f'{FRAME} is missing')
    rgb = cv2.cvtColor(bgr[:480, :640], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def capture_graph(fn):
    """(CUDA graph, its static output) of fn, after a warm-up on a side stream (PyTorch's
    recipe); raises where fn synchronises with the host."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def first_line(error):
    return f'{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}' \
        if str(error).strip() else type(error).__name__


# Sections: each returns the markdown lines of its part of the results file.

def environment(args):
    lines = [f'- Machine: {machine_description(args.device)}',
             f'- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN '
             f'{torch.backends.cudnn.version()}, Python {sys.version.split()[0]}']
    if args.device.startswith('cuda'):
        props = torch.cuda.get_device_properties(0)
        lines.append(f'- GPU: {props.name}, compute capability {props.major}.{props.minor}, '
                     f'{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs')
        try:
            smi = subprocess.run(['nvidia-smi', '--query-gpu=driver_version,clocks.sm,'
                                  'clocks.max.sm', '--format=csv,noheader'],
                                 capture_output=True, text=True, timeout=20)
            lines.append(f'- nvidia-smi (driver, SM clock, max SM clock): '
                         f'{smi.stdout.strip()}')
        except (OSError, subprocess.TimeoutExpired) as error:
            lines.append(f'- nvidia-smi: {first_line(error)}')
    return lines


def cuda_tests(args):
    """The CUDA tests by pytest (collected only with --smoke: a CPU cannot run them)."""
    command = [sys.executable, '-m', 'pytest', '-q', '-rfE', '--tb=short', '-p',
               'no:cacheprovider', '-k', 'cuda', 'test/test_cuda.py',
               'test/test_panoptic_head.py']
    if args.smoke:
        command.append('--collect-only')
    started = time.perf_counter()
    try:
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                             timeout=args.tests_timeout_s)
        output, code = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as error:
        output, code = (error.stdout or b'').decode(errors='replace') if isinstance(
            error.stdout, bytes) else (error.stdout or ''), 'timeout'
    log = args.out.with_name(f'{args.out.stem}_pytest.log')
    log.write_text(output)
    summary = [line for line in output.splitlines()
               if re.search(r'\d+ (passed|failed|error|skipped|tests? collected)', line)]
    failures = [line for line in output.splitlines() if line.startswith(('FAILED', 'ERROR'))]
    lines = [f'- Command: `{" ".join(command[1:])}`',
             f'- Exit code {code} after {time.perf_counter() - started:.0f} s: '
             f'{summary[-1] if summary else "no summary line"} (output: {log.name})']
    lines += [f'  - {line[:300]}' for line in failures[:20]]
    if code not in (0, 'timeout') and not summary:
        lines += ['', '```', *output.splitlines()[-15:], '```']
    return lines


def paper_network_config(input_hw):
    """Weber et al.'s network: ResNet-50-FPN (256 channels), RetinaNet with 4 convs per
    subnet and anchors of 4x the stride, 128-channel branches; COCO's 133 classes."""
    height, width = input_hw
    return ModelConfig(classes=tuple(f'class{k}' for k in range(COCO_THINGS + COCO_STUFF)),
                       is_thing=(True,) * COCO_THINGS + (False,) * COCO_STUFF,
                       encoder='resnet50', input_size=(width, height), fpn_channels=256,
                       branch_channels=128, detection_convs=4, anchor_size=4.0)


def paper_network(args, sizes):
    torch.manual_seed(0)
    model = SingleShotPanoptic(paper_network_config(sizes.network)).eval()
    height, width = sizes.network
    cuda = args.device.startswith('cuda')
    variants = [('eager fp32', dict()), ('eager fp16', dict(half=True)),
                ('torch.compile + CUDA graphs, fp16', dict(half=True, compile='reduce-overhead'))]
    lines = [f'Input {height} x {width}, batch 1, random weights (speed does not depend on '
             f'them); BatchNorm folded; {sizes.repeats} timed runs after {sizes.warmup}. '
             'Weber et al. report 42.6 ms end to end on a V100 (COCO, 576 x [576, 864]).', '',
             '| network | p50 ms | p95 ms | build s |', '|---|---|---|---|']
    compiled = None
    for name, options in variants:
        if not cuda and options:
            lines.append(f'| {name} | skipped (CUDA only) | | |')
            continue
        started = time.perf_counter()
        try:
            backend = TorchBackend(copy.deepcopy(model), args.device, **options)
            images = [torch.randn(1, 3, height, width, device=args.device,
                                  dtype=backend.input_dtype) for _ in range(3)]
            backend(images[0])                         # compile / first call
            build = time.perf_counter() - started
            rotation = itertools.cycle(images)   # three inputs in turn, not one cached
            p50, p95 = time_head(lambda: backend(next(rotation)), args.device, sizes.repeats,
                                 sizes.warmup)
            lines.append(f'| {name} | {p50:.2f} | {p95:.2f} | {build:.0f} |')
            compiled = backend
        except Exception as error:   # noqa: BLE001 - reported in the results, others go on
            lines.append(f'| {name} | failed: {first_line(error)} | | |')
            traceback.print_exc()
    if compiled is not None:
        try:
            lines += ['', *end_to_end(compiled, args, sizes.network, sizes, 'paper network')]
        except Exception as error:   # noqa: BLE001 - reported in the results
            lines += ['', f'End to end: failed: {first_line(error)}']
            traceback.print_exc()
    return lines


def end_to_end(backend, args, image_hw, sizes, what):
    """Stage medians of the frame pipeline on `backend` (highest_confidence)."""
    pipeline = FramePipeline(backend)
    frame = camera_frame(*image_hw)
    for _ in range(sizes.warmup):
        pipeline(frame)
    stages, totals = {}, []
    for _ in range(sizes.frames):
        synchronize(args.device)
        start = time.perf_counter()
        result = pipeline(frame)
        totals.append((time.perf_counter() - start) * 1e3)
        for stage, seconds in result.timings.items():
            stages.setdefault(stage, []).append(seconds * 1e3)
    cells = ' | '.join(f'{statistics.median(v):.2f}' for v in stages.values())
    return [f'End to end, {what} ({backend.name}), {image_hw[1]} x {image_hw[0]} camera frame, '
            f'{sizes.frames} frames, {result.network.boxes.shape[0]} detections:', '',
            f'| {" | ".join(stages)} | frame p50 | frame p95 |',
            '|' + '---|' * (len(stages) + 2),
            f'| {cells} | {statistics.median(totals):.2f} | '
            f'{sorted(totals)[min(len(totals) - 1, int(0.95 * len(totals)))]:.2f} |']


def head_policies(args, sizes):
    cuda = args.device.startswith('cuda')
    lines = [f'{DETECTIONS} valid detections (boxes up to 30 % of the image side), '
             f'{len(IS_THING)} classes, random logits, a heatmap with a peak per detection, '
             'the reference form (the one that runs on CUDA); learned parts at their '
             'initialisation. Graph replay: the same call captured once in a CUDA graph, '
             'checked equal to eager.', '',
             '| image (H x W) | head at | policy | eager p50 ms | eager p95 ms | '
             'graph replay p50 ms | graph replay p95 ms |', '|---|---|---|---|---|---|---|']
    for height, width in sizes.head:
        inputs = make_inputs(height, width, args.device, DETECTIONS)
        heatmap = make_heatmap(height, width, args.device, DETECTIONS)
        borderness = make_borderness(height, width, args.device)
        for policy in POLICIES:
            head = PanopticHead(IS_THING, PanopticHeadConfig(policy=policy), 'reference',
                                make_learned(policy, args.device)).to(args.device)

            def run():
                with torch.inference_mode():
                    return head(*inputs, image_size=(height, width), center_heatmap=heatmap,
                                borderness_map=borderness)
            cells = [f'{height} x {width}', f'{height // 4} x {width // 4}', policy]
            try:
                eager = time_head(run, args.device, sizes.repeats, sizes.warmup)
                cells += [f'{eager[0]:.3f}', f'{eager[1]:.3f}']
            except Exception as error:   # noqa: BLE001 - reported, the others go on
                lines.append('| ' + ' | '.join(cells + [f'failed: {first_line(error)}']) +
                             ' | | | |')
                continue
            cells += graph_replay(run, args, sizes) if cuda else ['CUDA only', '']
            lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def graph_replay(run, args, sizes):
    """[p50, p95] cells of the captured head, or why it could not be captured."""
    try:
        graph, out = capture_graph(run)
    except Exception as error:   # noqa: BLE001 - a host synchronisation shows up here
        torch.cuda.synchronize()
        return [f'not capturable: {first_line(error)}', '']
    graph.replay()
    if not torch.equal(out.panoptic, run().panoptic):
        return ['replay differs from eager', '']
    p50, p95 = time_head(graph.replay, args.device, sizes.repeats, sizes.warmup)
    return [f'{p50:.3f}', f'{p95:.3f}']


def shipped_pipeline(args, sizes):
    model, _ = load_checkpoint(default_model_path())
    cuda = args.device.startswith('cuda')
    variants = [('torch', dict()), ('torch fp16', dict(half=True)),
                ('torch.compile + CUDA graphs fp16', dict(half=True,
                                                          compile='reduce-overhead'))]
    c = model.config
    lines = [f'Shipped model `{default_model_path().name}` ({c.encoder}, {c.box_head} box head, '
             f'{c.input_size[0]} x {c.input_size[1]} input), node defaults (score threshold '
             f'{DecodeConfig().score_threshold}, highest_confidence), stage medians in ms.', '']
    for name, options in variants:
        if not cuda and options:
            lines.append(f'- {name}: skipped (CUDA only)')
            continue
        try:
            backend = TorchBackend(copy.deepcopy(model), args.device, **options)
            lines += [*end_to_end(backend, args, sizes.pipeline, sizes, name), '']
        except Exception as error:   # noqa: BLE001 - reported, the others go on
            lines.append(f'- {name}: failed: {first_line(error)}')
            traceback.print_exc()
    return lines


SECTIONS = (('Environment', environment, 10), ('CUDA tests', cuda_tests, 60),
            ('Panoptic head, every policy', head_policies, 60),
            ('Shipped model frame pipeline', shipped_pipeline, 90),
            ("The paper's network", paper_network, 150))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--out', type=Path)
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='a section that would start with less than its estimate of '
                             'this left is skipped and reported')
    parser.add_argument('--repeats', type=int)
    parser.add_argument('--tests-timeout-s', type=float, default=150.0)
    parser.add_argument('--smoke', action='store_true',
                        help='toy sizes, 2 repeats: checks the script (on the CPU too)')
    args = parser.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('CUDA is not available here: use --smoke --device cpu to check the '
                     'script without a GPU')
    sizes = copy.copy(SMOKE if args.smoke else Sizes())
    if args.repeats:
        sizes.repeats = args.repeats
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'
    slug = re.sub(r'[^a-z0-9]+', '_', gpu.lower()).strip('_')
    out = args.out = args.out or ROOT / 'benchmarks' / 'results' / f'gpu_{slug}.md'
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(out, f'GPU check: {gpu}' + (' (smoke run, toy sizes)' if args.smoke else ''))
    report.add('Command', [f'`benchmarks/gpu_check.sh {" ".join(argv or sys.argv[1:])}` on '
                           f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}'])
    deadline = time.perf_counter() + args.budget_s
    for heading, section, estimate_s in SECTIONS:
        left = deadline - time.perf_counter()
        if left < (0 if args.smoke else estimate_s):
            report.add(heading, [f'skipped: {left:.0f} s of the budget left, the section '
                                 f'needs about {estimate_s} s'])
            continue
        started = time.perf_counter()
        try:
            lines = section(args) if section in (environment, cuda_tests) else \
                section(args, sizes)
        except Exception as error:   # noqa: BLE001 - one section failing keeps the others
            traceback.print_exc()
            lines = [f'failed: {first_line(error)}']
        report.add(heading, lines + ['', f'({time.perf_counter() - started:.0f} s)'])
    print(f'written to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
