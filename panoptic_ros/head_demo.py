"""Interim demo (until the camera -> node demo of issue 7 exists): the panoptic head alone.

A hand-built scene at 1/4 resolution of a 640 x 480 image: road and sky, three overlapping
cars (one partly hidden behind another) and a person detection on empty road (a false
detection the semantic branch should correct), with ideal centre offsets. Runs every overlap
policy, prints the segments, and writes out/head_demo.png (one panel per policy).

Usage: panoptic-ros-head-demo [--out out]   (or: python -m panoptic_ros.head_demo)
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from panoptic_ros.core.panoptic_head import (
    POLICIES, PanopticHead, PanopticHeadConfig, pad_detections)
from panoptic_ros.core.visualization import colorize_panoptic

CLASS_NAMES = ['void', 'road', 'sky', 'car', 'person']
CLASS_COLORS = [(0, 0, 0), (128, 64, 128), (70, 130, 180), (0, 0, 142), (220, 20, 60)]
IS_THING = [False, False, True, True]          # semantic channels: road, sky, car, person
IMAGE_H, IMAGE_W, STRIDE = 480, 640, 4


def build_scene():
    """Network-like outputs for the scene: logits [4, 120, 160], offsets, detections."""
    h, w = IMAGE_H // STRIDE, IMAGE_W // STRIDE
    rows, cols = np.mgrid[0:h, 0:w]
    x, y = (cols + 0.5) * STRIDE, (rows + 0.5) * STRIDE       # input-pixel centres
    logits = np.zeros((4, h, w), np.float32)
    logits[0] = np.where(y > 200, 2.0, 0.0)                   # road below the horizon
    logits[1] = np.where(y <= 200, 2.0, 0.0)                  # sky above
    offsets = np.zeros((2, h, w), np.float32)
    # Cars as ellipses, front to back (a later car is hidden where an earlier one stands).
    cars = [(200, 330, 90, 60), (300, 300, 80, 55), (430, 320, 100, 65)]
    taken = np.zeros((h, w), bool)
    boxes = []
    for cx, cy, rx, ry in cars:
        mask = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) & ~taken
        logits[2][mask] = 4.0
        offsets[0][mask] = (cx - x)[mask]
        offsets[1][mask] = (cy - y)[mask]
        taken |= mask
        boxes.append([cx - rx, cy - ry, cx + rx, cy + ry])
    boxes.append([520, 220, 600, 420])                        # person on empty road: false
    scores = [0.92, 0.85, 0.88, 0.6]
    classes = [2, 2, 2, 3]
    return (torch.from_numpy(logits), torch.from_numpy(offsets), torch.tensor(boxes),
            torch.tensor(scores), torch.tensor(classes))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('out'))
    args = parser.parse_args(argv)
    logits, offsets, boxes, scores, classes = build_scene()
    padded = pad_detections(boxes, scores, classes, max_detections=16)
    panels = []
    for policy in POLICIES:
        head = PanopticHead(IS_THING, PanopticHeadConfig(policy=policy))
        out = head(logits, offsets, *padded, image_size=(IMAGE_H, IMAGE_W))
        segments = out.segments()
        print(f'policy {policy}: {len(segments)} segments')
        for seg in segments:
            name = CLASS_NAMES[seg['category_id']]
            print(f"  id {seg['segment_id']:5d}  {name:6s}  area {seg['area']:6d} px  "
                  f"score {seg['score']:.2f}  box {[round(v) for v in seg['box']]}")
        print(f'  detections -> segment ids: {out.det_segment_id[:len(boxes)].tolist()}')
        rgb = colorize_panoptic(out.panoptic.numpy(), out.label_divisor, CLASS_COLORS)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        for (x1, y1, x2, y2), seg_id in zip(boxes.tolist(), out.det_segment_id.tolist()):
            color = (255, 255, 255) if seg_id else (0, 0, 255)
            cv2.rectangle(bgr, (int(x1), int(y1)), (int(x2), int(y2)), color, 1)
        cv2.putText(bgr, policy, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
        panels.append(bgr)
    montage = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / 'head_demo.png'
    cv2.imwrite(str(path), montage)
    print(f'wrote {path} (white boxes: detections that became segments; red: removed)')


if __name__ == '__main__':
    main()
