"""Pieces every benchmark script shares: the machine line, interleaved network timing and
writing the result table."""

import os
import statistics
import time
from pathlib import Path

import torch

from panoptic_ros.core.backends import configure_torch_threads
from panoptic_ros.core.machine import cpu_model


def machine_description(device='cpu'):
    """CPU model, visible cores, torch version and threads (and the GPU on CUDA)."""
    text = f'{cpu_model()}, {os.cpu_count()} cores visible, torch {torch.__version__}, ' \
           f'{torch.get_num_threads()} intra-op threads'
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
