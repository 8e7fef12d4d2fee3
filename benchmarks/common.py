"""Pieces every benchmark script shares: the machine line and writing the result table."""

import os
from pathlib import Path

import torch

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
