"""panoptic-ros-train-policy: train a learned overlap policy's part on a frozen network.

  panoptic-ros-train-policy --model MODEL --policy spatial_ranking|refined
      [--data data/sim_policy --split train --select-split select] [--epochs 30]
      [--input-size W H]

The network runs once over the split (its outputs cached at the head's 1/4 grid); then
- spatial_ranking: OANet's spatial ranking module learns, with pixel-wise cross entropy on
  the *conflicting* pixels only (covered by two or more box masks; the others ignored), the
  ground-truth class of each pixel (a thing class, or 'no thing') from the instance map;
- refined: the INRIA report's per-class refinement networks learn, with per-pixel binary
  cross entropy around each box, the ground-truth mask of the instance a detection matches
  (same class, mask IoU >= 0.5); afterwards each class keeps its refinement only where it
  raises that class's PQ on --select-split (a split not used for training), as the report
  found it helps some classes and ruins others.
Writes `<model stem>.<policy>.safetensors` next to the model (learned.weights_path) with the
command, data, time, machine and the per-class selection in its metadata.
"""

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.data import CocoPanopticDataset
from panoptic_ros.core.evaluation import evaluate_pipeline
from panoptic_ros.core.head import learned, pad_detections, PanopticHeadConfig, reference
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.machine import cpu_model

MATCH_IOU = 0.5


def grid_ground_truth(ids, segments, categories, shape):
    """Ground truth sampled at the head grid's cell centres: (channel int64 [h, w], -1 void;
    instance id int64 [h, w], 0 for stuff and void)."""
    h, w = shape
    height, width = ids.shape
    rows = np.minimum(((np.arange(h) + 0.5) * height / h).astype(int), height - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * width / w).astype(int), width - 1)
    sampled = ids[np.ix_(rows, cols)]
    channel_of = {c['id']: k for k, c in enumerate(categories)}
    channel = np.full((h, w), -1, np.int64)
    instance = np.zeros((h, w), np.int64)
    for seg in segments:
        mask = sampled == seg['id']
        channel[mask] = channel_of[seg['category_id']]
        if categories[channel_of[seg['category_id']]]['isthing'] and not seg.get('iscrowd'):
            instance[mask] = seg['id']
    return torch.from_numpy(channel), torch.from_numpy(instance)


def cache_frames(pipeline, root, split, limit=None):
    """Per frame the head's inputs and the ground truth at the 1/4 grid."""
    mc = pipeline.model_config
    dataset = CocoPanopticDataset(root, split, mc.input_size, mc.mean, mc.std)
    head = pipeline.head
    frames = []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        rgb, ids, segments = dataset.load(index)
        with torch.no_grad():
            x, scale = pipeline.preprocess(rgb)
            net = pipeline.decode(pipeline.backend(x), scale, rgb.shape[:2])
        sem_logits = net.sem_logits.float().contiguous()
        boxes, scores, classes, valid = pad_detections(net.boxes, net.scores, net.classes,
                                                       pipeline.max_detections)
        sem_class, _, _ = reference.semantic_argmax(sem_logits, head.stuff_channels,
                                                    head.thing_channels)
        px, py = reference.pixel_centres(*sem_logits.shape[1:], net.image_size, 'cpu')
        inside_x, inside_y = reference.box_membership(boxes, valid, px, py)
        channel, instance = grid_ground_truth(ids, segments, dataset.categories,
                                              sem_logits.shape[1:])
        frames.append(dict(sem_logits=sem_logits, sem_class=sem_class, classes=classes,
                           valid=valid, inside_x=inside_x, inside_y=inside_y,
                           channel=channel, instance=instance))
    return frames, dataset.categories


def ranking_examples(frames, thing_channels):
    """(instance map [T, h, w], target [h, w] with -100 off the conflicting pixels) per frame."""
    examples = []
    num_things = thing_channels.shape[0]
    for f in frames:
        counts = reference.class_mask_counts(f['sem_class'], f['classes'], thing_channels,
                                             f['inside_x'], f['inside_y'])
        conflict = (counts >= 2).any(0)
        target = torch.full(conflict.shape, num_things, dtype=torch.long)   # 'no thing'
        for t, ch in enumerate(thing_channels.tolist()):
            target[f['channel'] == ch] = t
        target[~conflict | (f['channel'] < 0)] = -100
        examples.append(((counts > 0).float(), target))
    return examples


def train_ranking(frames, thing_channels, epochs, lr, kernel):
    module = learned.SpatialRankingModule(thing_channels.shape[0], kernel)
    examples = [e for e in ranking_examples(frames, thing_channels) if (e[1] >= 0).any()]
    if not examples:
        raise SystemExit('no conflicting pixels in the split: nothing to train on')
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        total, pixels = 0.0, 0
        for instance_map, target in examples:
            logits = module(instance_map[None])
            loss = F.cross_entropy(logits, target[None], ignore_index=-100, reduction='sum')
            n = int((target >= 0).sum())
            optimizer.zero_grad()
            (loss / n).backward()
            optimizer.step()
            total, pixels = total + loss.item(), pixels + n
        history.append(total / pixels)
        print(f'epoch {epoch + 1}/{epochs}: conflicting-pixel cross entropy {history[-1]:.4f}'
              f' ({pixels} pixels)')
    return module.eval(), {'conflicting_frames': len(examples), 'loss_history': history}


def refine_examples(frames, thing_channels):
    """Per frame (masks float [M, h, w], probabilities [C, h, w], thing index [M], targets
    float [M, h, w], weights [M, h, w]) of the detections matching a ground-truth instance."""
    examples = []
    for f in frames:
        inside = f['inside_y'].T[:, :, None] & f['inside_x'].T[:, None, :]
        masks = inside & (f['sem_class'] == f['classes'][:, None, None])
        rows = []
        for n in torch.nonzero(f['valid'] & masks.flatten(1).any(1))[:, 0].tolist():
            candidates = f['instance'][masks[n] & (f['channel'] == f['classes'][n])]
            best, best_iou = None, MATCH_IOU
            for gt in torch.unique(candidates).tolist():
                gt_mask = f['instance'] == gt
                iou = float((gt_mask & masks[n]).sum()) / float((gt_mask | masks[n]).sum())
                if iou >= best_iou:
                    best, best_iou = gt_mask, iou
            if best is not None:
                rows.append((n, best))
        if not rows:
            continue
        index = torch.tensor([n for n, _ in rows])
        region = F.max_pool2d(inside[index].float()[None], 5, 1, 2)[0]   # box grown 2 cells
        examples.append((masks[index].float(), torch.softmax(f['sem_logits'], 0),
                         reference.thing_index(thing_channels, f['classes'][index]),
                         torch.stack([gt for _, gt in rows]).float(),
                         torch.maximum(region, torch.stack([gt for _, gt in rows]).float())))
    return examples


def train_refinement(frames, thing_channels, num_classes, epochs, lr, kernel):
    module = learned.MaskRefinement(thing_channels.shape[0], num_classes, kernel)
    examples = refine_examples(frames, thing_channels)
    if not examples:
        raise SystemExit('no detection matches a ground-truth instance: nothing to train on')
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        total, pixels = 0.0, 0
        for masks, probability, thing_index, target, weight in examples:
            logits = module.fast_logits(masks, probability, thing_index)
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction='none') *
                    weight).sum()
            optimizer.zero_grad()
            (loss / weight.sum()).backward()
            optimizer.step()
            total, pixels = total + loss.item(), pixels + weight.sum().item()
        history.append(total / pixels)
        print(f'epoch {epoch + 1}/{epochs}: mask binary cross entropy {history[-1]:.4f}')
    matched = sum(e[0].shape[0] for e in examples)
    return module.eval(), {'matched_detections': matched, 'loss_history': history}


def select_classes(module, backend, decode, root, split, categories, thing_channels,
                   limit=None):
    """Enable each class's refinement only where it raises that class's PQ on `split`."""
    per_class = {}
    for enabled in (False, True):
        module.enabled.fill_(enabled)
        pipeline = FramePipeline(backend, decode, PanopticHeadConfig(policy='refined'),
                                 learned=lambda name: module)
        scores = evaluate_pipeline(pipeline, root, split, limit=limit)['pq']['per_class']
        per_class[enabled] = {categories[ch]['name']: scores[categories[ch]['id']]['pq']
                              for ch in thing_channels.tolist()}
    keep = [per_class[True][categories[ch]['name']] > per_class[False][categories[ch]['name']]
            for ch in thing_channels.tolist()]
    module.enabled.copy_(torch.tensor(keep))
    return {name: {'pq_box_cropped': per_class[False][name], 'pq_refined': per_class[True][name],
                   'enabled': bool(k)}
            for name, k in zip(per_class[False], keep)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--policy', required=True, choices=sorted(learned.MODULES))
    parser.add_argument('--data', type=Path, default=Path('data/sim_policy'))
    parser.add_argument('--split', nargs='+', default=['train', 'train_crowded'])
    parser.add_argument('--select-split', default='select')
    parser.add_argument('--limit', type=int, help='frames per split')
    parser.add_argument('--score-threshold', type=float, default=DecodeConfig.score_threshold,
                        help="the decoder's (default: the node's)")
    parser.add_argument('--confidence-only', action='store_true',
                        help='score = class confidence alone (the node\'s borderness_score: '
                             'false; default: confidence x border-ness with LPSNet\'s head)')
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--lr', type=float, default=0.01)
    parser.add_argument('--kernel', type=int,
                        help='convolution size in 1/4 cells (default: 7 for the ranking '
                             "module, OANet's best 1 x 7 + 7 x 1; 3 for the refinement)")
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='network input size (default: the one the model was trained at; '
                             "train at the node's input_size)")
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', type=Path, help='default: next to the model')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, _ = load_checkpoint(args.model)
    if args.input_size:   # the same weights at another (static) input size
        model = model.at_input_size(tuple(args.input_size))
    backend = make_backend('torch', copy.deepcopy(model), 'cpu')
    decode = DecodeConfig(score_threshold=args.score_threshold,
                          borderness_score=not args.confidence_only)
    pipeline = FramePipeline(backend, decode)
    frames = []
    for split in args.split:
        cached, categories = cache_frames(pipeline, args.data, split, args.limit)
        frames += cached
    print(f'cached the network outputs of {len(frames)} frames of {args.data} {args.split}')
    thing_channels = pipeline.head.thing_channels
    torch.manual_seed(0)
    arguments = sys.argv[1:] if argv is None else argv
    info = {'command': 'panoptic-ros-train-policy ' + ' '.join(arguments),
            'data': [f'{args.data}/{split}' for split in args.split], 'frames': len(frames),
            'score_threshold': args.score_threshold,
            'borderness_score': not args.confidence_only,
            'model': args.model.name, 'input_size': list(model.config.input_size),
            'epochs': args.epochs, 'lr': args.lr,
            'machine': f'{cpu_model()}, {os.cpu_count()} CPUs',
            'python': platform.python_version(),
            'torch': torch.__version__}
    if args.policy == 'spatial_ranking':
        module, record = train_ranking(frames, thing_channels, args.epochs, args.lr,
                                       args.kernel or 7)
    else:
        module, record = train_refinement(frames, thing_channels, len(categories),
                                          args.epochs, args.lr, args.kernel or 3)
        with torch.no_grad():
            record['selection'] = select_classes(module, backend, decode, args.data,
                                                 args.select_split, categories,
                                                 thing_channels, args.limit)
        record['selection_data'] = f'{args.data}/{args.select_split}'
        print('per-class selection:', record['selection'])
    info.update(record, seconds=round(time.perf_counter() - start, 1))
    out = args.out or learned.weights_path(args.model, args.policy)
    learned.save_policy_weights(out, args.policy, module, model.config.classes, info)
    print(f'wrote {out} in {info["seconds"]} s')


if __name__ == '__main__':
    main()
