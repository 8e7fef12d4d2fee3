"""Pieces every benchmark script shares: the machine line and writing the result table."""

import os
from pathlib import Path
import platform

import torch


def machine_description(device='cpu'):
    """CPU model, visible cores, torch version and threads (and the GPU on CUDA)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    text = f'{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, ' \
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
