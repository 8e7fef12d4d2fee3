"""Test process: the real panoptic_node, its perception core built with faulty parts.

Usage: faulty_node.py --ros-args -p model_path:=... (the usual node arguments)
The first pixel's red value of each image selects a fault: 1 -> the preprocessing step
raises RuntimeError('injected fault'); 2 -> the network's semantic logits are NaN (as a
corrupted model would produce); anything else -> the normal parts. The parts are given to
Perception.from_settings; everything else is the real node.
"""
import sys

import torch

from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import Preprocessor
from panoptic_ros.core.perception import Perception
from panoptic_ros.ros.panoptic_node import PanopticNode
from panoptic_ros.ros.runner import run_node


class FaultyParts:
    """A preprocessor and a backend around the real ones; the preprocessor reads the fault
    marker, the backend applies it."""

    def __init__(self, settings):
        s = settings
        model, _ = load_checkpoint(s.model_path)
        self.backend = make_backend(s.backend, model, s.device, s.half, s.cache_dir,
                                    s.strict_device)
        mc = self.backend.model_config
        self.preprocessor = Preprocessor(mc.input_size, mc.mean, mc.std, self.backend.device,
                                         self.backend.input_dtype)
        self.marker = 0
        for name in ('name', 'device', 'model_config', 'anchors', 'input_dtype'):
            setattr(self, name, getattr(self.backend, name))

    def preprocess(self, rgb):
        self.marker = int(rgb[0, 0, 0])
        if self.marker == 1:
            raise RuntimeError('injected fault')
        return self.preprocessor(rgb)

    def __call__(self, x):
        raw = self.backend(x)
        if self.marker == 2:
            raw = dict(raw, sem_logits=torch.full_like(raw['sem_logits'], float('nan')))
        return raw


def faulty_perception(settings):
    parts = FaultyParts(settings)
    return Perception.from_settings(settings, backend=parts, preprocess=parts.preprocess)


if __name__ == '__main__':
    sys.exit(run_node(lambda: PanopticNode(build_perception=faulty_perception),
                      'faulty_node', sys.argv))
