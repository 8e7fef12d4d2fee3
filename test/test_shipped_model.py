"""The shipped light model (models/panoptic_light_sim.safetensors) on rendered frames.

Verifies: the file loads with the sim classes and the light architecture, within 25 MB; on
four fixed rendered 640x480 frames its detections find the things (box recall at IoU 0.5)
and its panoptic output gets road, grass and sky right (per-pixel accuracy on stuff).
Thresholds sit below what the model measured when it was committed (see its model card).
Does not verify the val-split PQ (benchmarks/bench_network.py records it).
"""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.taxonomy import CLASSES
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

pytestmark = pytest.mark.pipeline

SEEDS = (900, 901, 902, 903)


@pytest.fixture(scope='module')
def pipeline():
    path = default_model_path()
    assert path.stat().st_size <= 25 * 2 ** 20
    model, meta = load_checkpoint(path, expected={'classes': [c.name for c in CLASSES],
                                                  'encoder': 'mobilenet_v2'})
    return FramePipeline(make_backend('torch', model))


def test_detections_and_stuff_on_rendered_frames(pipeline):
    found = total = correct = stuff_pixels = 0
    for seed in SEEDS:
        frame = render_random_frame(seed, SimConfig())
        result = pipeline(frame.rgb)
        gt = [s for s in frame.segments if CLASSES[s['category_id'] - 1].is_thing and
              s['area'] >= 400]
        if gt:
            gt_boxes = torch.tensor([[s['bbox'][0], s['bbox'][1], s['bbox'][0] + s['bbox'][2],
                                      s['bbox'][1] + s['bbox'][3]] for s in gt], dtype=torch.float)
            boxes = result.network.boxes
            if len(boxes):
                found += int((box_iou(gt_boxes, boxes).max(1).values >= 0.5).sum())
            total += len(gt)
        semantic = result.panoptic.semantic().numpy()
        gt_semantic = frame.panoptic // 1000
        stuff = np.isin(gt_semantic, [1, 2, 4])
        correct += int((semantic[stuff] == gt_semantic[stuff]).sum())
        stuff_pixels += int(stuff.sum())
    recall, accuracy = found / total, correct / stuff_pixels
    print(f'thing recall@0.5 {recall:.2f} ({found}/{total}), stuff accuracy {accuracy:.3f}')
    assert recall >= 0.3
    assert accuracy >= 0.85
