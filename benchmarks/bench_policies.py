"""Benchmark: every overlap policy of the panoptic head side by side on the same network outputs.

The network runs once per frame of each split (one model, one score threshold); every policy's
head then runs on the same decoded outputs, so the differences are the merge rules' alone.
Per policy and split: PQ, SQ, RQ, PQ_th, RQ_th, PQ_st and per-class PQ of the things; per
split, how many thing pixels any same-class overlap reaches at all (the pixels where the
box-based policies can differ); and each policy's head latency on the CPU at 1/4 resolution
of a 640 x 480 frame with 100 detections (p50, p95; random inputs of
bench_panoptic_head.py, learned parts at their size). Learned policies load their weights
from next to the model (panoptic-ros-train-policy). --oracle adds the bound of every box-based
rule: each claimed pixel given to the detection the ground truth says owns it.

Usage: python benchmarks/bench_policies.py --model MODEL [--score-threshold 0.25]
           [--backend onnxruntime] [--input-size W H]
           [--splits data/sim320:val data/sim_crowded_low:val] [--policies ...]
           [--limit N] [--repeats 30] [--oracle] [--no-latency]
           [--out benchmarks/results/policies_cpu.md]
"""

import argparse
import copy
import sys
import types
from pathlib import Path

import torch

from bench_panoptic_head import (
    make_borderness, make_heatmap, make_inputs, make_learned, IS_THING, time_head)
from common import machine_description, SPLITS, write_result
from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.data import CocoPanopticDataset
from panoptic_ros.core.evaluation import predicted_segments
from panoptic_ros.core.head import (
    learned, pad_detections, PanopticHead, PanopticHeadConfig, POLICIES, reference)
from panoptic_ros.core.head.policies import REGISTRY
from panoptic_ros.core.inference import check_policy_inputs, DecodeConfig, FramePipeline
from panoptic_ros.core.metrics import PanopticEvaluator
from panoptic_ros.policy_train_cli import grid_ground_truth


def network_outputs(pipeline, root, split, limit):
    """[(NetworkOutput, gt ids, gt segments)] of a split, and its categories."""
    mc = pipeline.model_config
    dataset = CocoPanopticDataset(root, split, mc.input_size, mc.mean, mc.std)
    frames = []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        rgb, ids, segments = dataset.load(index)
        with torch.no_grad():
            x, scale = pipeline.preprocess(rgb)
            frames.append((pipeline.decode(pipeline.backend(x), scale, rgb.shape[:2]), ids,
                           segments))
    return frames, dataset.categories


def overlap_share(frames, head, max_detections):
    """Fraction of the predicted thing pixels (1/4 grid) that two or more same-class box
    masks hold: where highest_confidence, smallest_first, closest_center, paste,
    closest_borderness and spatial_ranking can disagree at all."""
    overlapped = things = 0
    for net, _, _ in frames:
        boxes, scores, classes, valid = pad_detections(net.boxes, net.scores, net.classes,
                                                       max_detections)
        sem_logits = net.sem_logits.float().contiguous()
        sem_class, _, _ = reference.semantic_argmax(sem_logits, head.stuff_channels,
                                                    head.thing_channels)
        x, y = reference.pixel_centres(*sem_logits.shape[1:], net.image_size, 'cpu')
        inside_x, inside_y = reference.box_membership(boxes, valid, x, y)
        counts = reference.class_mask_counts(sem_class, classes, head.thing_channels,
                                             inside_x, inside_y)
        overlapped += int((counts >= 2).any(0).sum())
        things += int(head.is_thing.take(sem_class).sum())
    return overlapped / max(things, 1)


class OracleOverlaps:
    """The bound of every box-based overlap rule: highest_confidence, except that a pixel
    two or more same-class box masks hold goes to the detection whose matched ground-truth
    instance (the one most of its mask's pixels belong to) holds that pixel, where one does.
    Same detections, same semantics: no rule choosing among the claiming boxes does better.
    ``ground_truth`` (instance id int64 [h, w] at the head's grid) is set before each frame."""

    name = 'oracle (bound)'
    ground_truth = None

    def __call__(self, inputs):
        det_slot, is_det = REGISTRY['highest_confidence'].fast(inputs)
        inside = inputs.inside_y.T[:, :, None] & inputs.inside_x.T[:, None, :]   # [N, h, w]
        masks = inside & (inputs.sem_class == inputs.classes[:, None, None])
        contested = masks.sum(0) >= 2
        truth = self.ground_truth
        matched = torch.full((masks.shape[0],), -1, dtype=torch.long)
        for n in torch.nonzero(masks.flatten(1).any(1))[:, 0].tolist():
            ids = truth[masks[n]]
            ids = ids[ids > 0]
            if ids.numel():
                matched[n] = torch.mode(ids).values
        right = masks & (truth[None] == matched[:, None, None]) & (matched >= 0)[:, None, None]
        oracle = right.float().argmax(0)
        return torch.where(contested & right.any(0), oracle, det_slot), is_det


def oracle_head(is_thing):
    """A highest_confidence head whose overlap rule is OracleOverlaps."""
    head = PanopticHead(is_thing, PanopticHeadConfig(policy='highest_confidence'))
    head.oracle = head._assign = OracleOverlaps()
    return head


def score_policy(head, frames, categories, max_detections):
    evaluator = PanopticEvaluator({c['id']: c for c in categories})
    for net, ids, segments in frames:
        boxes, scores, classes, valid = pad_detections(net.boxes, net.scores, net.classes,
                                                       max_detections)
        if hasattr(head, 'oracle'):   # the ground truth at the head's grid
            head.oracle.ground_truth = grid_ground_truth(ids, segments, categories,
                                                         net.sem_logits.shape[1:])[1]
        with torch.no_grad():
            out = head(net.sem_logits, net.center_offsets, boxes, scores, classes, valid,
                       image_size=net.image_size, center_heatmap=net.center_heatmap,
                       borderness_map=net.borderness_map)
        pred_ids, pred_segments = predicted_segments(types.SimpleNamespace(panoptic=out),
                                                     categories)
        evaluator.add(ids, {s['id']: s for s in segments}, pred_ids, pred_segments)
    return evaluator.panoptic_quality()


def head_latency(policy, repeats):
    inputs = make_inputs(480, 640, 'cpu', 100)
    heatmap, borderness = make_heatmap(480, 640, 'cpu', 100), make_borderness(480, 640, 'cpu')
    head = PanopticHead(IS_THING, PanopticHeadConfig(policy=policy),
                        learned=make_learned(policy, 'cpu'))

    def run():
        with torch.inference_mode():
            return head(*inputs, image_size=(480, 640), center_heatmap=heatmap,
                        borderness_map=borderness)
    return time_head(run, 'cpu', repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--score-threshold', type=float, default=0.25)
    parser.add_argument('--splits', nargs='+', default=SPLITS)
    parser.add_argument('--policies', nargs='+', choices=POLICIES, default=list(POLICIES))
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='network input size (default: the one the model was trained at)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--limit', type=int)
    parser.add_argument('--oracle', action='store_true',
                        help='also score the ground-truth bound of box-based overlap rules')
    parser.add_argument('--no-latency', action='store_true')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/policies_cpu.md'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description()
    model, _ = load_checkpoint(args.model)
    if args.input_size:
        model = model.at_input_size(tuple(args.input_size))
    backend = make_backend(args.backend, copy.deepcopy(model), 'cpu', cache_dir=Path('.cache'),
                           threads=args.threads, model_path=args.model)
    if backend.name != args.backend:
        raise SystemExit(f'{args.backend} is not available for {args.model} at this size')
    decode = DecodeConfig(score_threshold=args.score_threshold)
    pipeline = FramePipeline(backend, decode)
    load = learned.loader_for(args.model, model.config.classes)
    policies = []
    for name in args.policies:
        try:
            check_policy_inputs(REGISTRY[name], model.config)
            module = load(REGISTRY[name].learned) if REGISTRY[name].learned else None
        except ValueError as error:
            print(f'skipping {name}: {error}')
            continue
        policies.append((name, PanopticHead(model.config.is_thing,
                                            PanopticHeadConfig(policy=name), learned=module)))
    if args.oracle:
        policies.append((OracleOverlaps.name, oracle_head(model.config.is_thing)))
    thing_names = [c for c, thing in zip(model.config.classes, model.config.is_thing) if thing]
    lines = [f'# Overlap policies side by side: {args.model.name}', '',
             f'Machine: {machine}; backend {args.backend}, network input '
             f'{model.config.input_size[0]}x{model.config.input_size[1]}; score threshold '
             f'{args.score_threshold}; every policy on the same decoded network outputs.',
             f'Command: `python benchmarks/bench_policies.py {" ".join(sys.argv[1:])}`', '']
    for spec in args.splits:
        root, split = spec.rsplit(':', 1)
        frames, categories = network_outputs(pipeline, root, split, args.limit)
        share = overlap_share(frames, pipeline.head, decode.max_detections)
        lines += [f'## {root}/{split} ({len(frames)} images)', '',
                  f'Predicted thing pixels that two or more same-class box masks hold: '
                  f'{100 * share:.2f} %.', '',
                  '| policy | PQ | SQ | RQ | PQ_th | RQ_th | PQ_st | ' +
                  ' | '.join(thing_names) + ' |',
                  '|---' * (7 + len(thing_names)) + '|']
        for name, head in policies:
            pq = score_policy(head, frames, categories, decode.max_detections)
            per_class = {v['name']: v['pq'] for v in pq['per_class'].values()}
            row = (f"| {name} | {pq['all']['pq']:.1f} | {pq['all']['sq']:.1f} | "
                   f"{pq['all']['rq']:.1f} | {pq['things']['pq']:.1f} | "
                   f"{pq['things']['rq']:.1f} | {pq['stuff']['pq']:.1f} | " +
                   ' | '.join(f'{per_class.get(c, float("nan")):.1f}' for c in thing_names) +
                   ' |')
            print(row, flush=True)
            lines.append(row)
        lines.append('')
    if not args.no_latency:
        lines += ['## Head latency (CPU, 1/4 of 640 x 480, 100 detections, fast form)', '',
                  '| policy | p50 ms | p95 ms |', '|---|---|---|']
        for name in args.policies:
            p50, p95 = head_latency(name, args.repeats)
            lines.append(f'| {name} | {p50:.2f} | {p95:.2f} |')
            print(lines[-1], flush=True)
    write_result('\n'.join(lines) + '\n', args.out)


if __name__ == '__main__':
    main()
