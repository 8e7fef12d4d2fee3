"""Pieces every benchmark script shares: the machine line, interleaved network timing and
writing the result table."""

import os
import statistics
import time
from pathlib import Path

import torch

from panoptic_ros.core.backends import configure_torch_threads
from panoptic_ros.core.machine import cpu_model, vector_extensions


def machine_description(device='cpu'):
    """CPU model and its vector extensions, visible cores, torch version and threads (and the
    GPU on CUDA)."""
    text = f'{cpu_model()} ({vector_extensions()}), {os.cpu_count()} cores visible, ' \
           f'torch {torch.__version__}, {torch.get_num_threads()} intra-op threads'
    if str(device).startswith('cuda'):
        text += f', GPU {torch.cuda.get_device_name()}'
    return text


def write_result(text, out):
    """Print the table and write it to `out` (parents created)."""
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f'written to {out}')


def interleaved_p50s(backends, rounds, repeats, threads):
    """[[p50 ms of each round] per backend]: in each of `rounds` rounds every backend's network
    runs in turn on a random input of its size (3 warm-up runs, then `repeats` timed), so that
    the machine's drift hits every backend alike."""
    p50s = [[] for _ in backends]
    for _ in range(rounds):
        for backend, rounds_p50 in zip(backends, p50s):
            configure_torch_threads(backend, threads)
            width, height = backend.model_config.input_size
            x = torch.randn(1, 3, height, width)
            for _ in range(3):
                backend(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                backend(x)
                times.append(time.perf_counter() - start)
            rounds_p50.append(statistics.median(times) * 1e3)
    return p50s


SPLITS = ('data/sim320:val', 'data/sim_crowded_low:val')


def add_split_and_timing_arguments(parser, rounds, out):
    """--splits, --threads, --rounds, --repeats and --out, as the INT8 benchmarks take them."""
    parser.add_argument('--splits', nargs='*', default=SPLITS, metavar='ROOT:SPLIT')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=rounds)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--out', type=Path, default=Path(out))


def score_on_splits(label, backend, splits):
    """{split: scores} of `backend`'s frame pipeline (node defaults) on each ROOT:SPLIT."""
    from panoptic_ros.core.evaluation import evaluate_pipeline, summary_line
    from panoptic_ros.core.inference import FramePipeline
    scores = {}
    for split in splits:
        root, name = split.split(':')
        scores[split] = evaluate_pipeline(FramePipeline(backend), Path(root), name)
        print(f'{label}, {split}: {summary_line(scores[split])}', flush=True)
    return scores


def split_headers(splits):
    """The column headers of score_cell, one per ROOT:SPLIT."""
    return [f'{split}: PQ / PQ_th / PQ_st / mIoU / box AP' for split in splits]


def score_cell(scores):
    """'PQ / PQ_th / PQ_st / mIoU / box AP' of one split's scores."""
    pq = scores['pq']
    return (f"{pq['all']['pq']:.1f} / {pq['things']['pq']:.1f} / {pq['stuff']['pq']:.1f} / "
            f"{scores['miou']:.1f} / {scores['box_ap']['ap']:.1f}")
