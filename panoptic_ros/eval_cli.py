"""panoptic-ros-eval: compare predictions with ground truth and print a table.

  panoptic-ros-eval --gt DIR --pred DIR [--split val] [--detections FILE] [--out FILE]

Both folders use the layout of `panoptic-ros-sim export` (annotations/panoptic_<split>.json,
panoptic/<split>/*.png; optional extras/<split>/*_occupancy.png). Predictions are matched to
ground truth by file name. --detections: COCO results JSON (image_id, category_id, bbox
[x, y, w, h], score) for box AP. Prints PQ / SQ / RQ (all, things, stuff, per class), mIoU,
box AP and, when both sides have occupancy grids, occupied IoU, free IoU and accuracy over
known cells; --out also writes the table to a file.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from panoptic_ros.core.metrics import box_ap, occupancy_scores, PanopticEvaluator
from panoptic_ros.core.sim.coco import read_panoptic_png
from panoptic_ros.core.sim.occupancy_gt import read_grid_png


def load_split(root, split):
    """(annotation json, {file_name: annotation}) of a dataset folder."""
    data = json.loads((Path(root) / 'annotations' / f'panoptic_{split}.json').read_text())
    return data, {a['file_name']: a for a in data['annotations']}


def read_ids(root, split, file_name):
    return read_panoptic_png(Path(root) / 'panoptic' / split / file_name)


def read_grid(root, split, stem):
    path = Path(root) / 'extras' / split / f'{stem}_occupancy.png'
    return read_grid_png(path) if path.is_file() else None


def evaluate(gt_root, pred_root, split='val', detections=None):
    """All scores as a dict (see the module docstring)."""
    gt_data, gt_anns = load_split(gt_root, split)
    _, pred_anns = load_split(pred_root, split)
    categories = {c['id']: c for c in gt_data['categories']}
    evaluator = PanopticEvaluator(categories)
    gt_boxes, grids = [], []
    for file_name, gt_ann in gt_anns.items():
        if file_name not in pred_anns:
            raise ValueError(f'no prediction for {file_name}')
        pred_ann = pred_anns[file_name]
        evaluator.add(read_ids(gt_root, split, file_name),
                      {s['id']: s for s in gt_ann['segments_info']},
                      read_ids(pred_root, split, file_name),
                      {s['id']: s for s in pred_ann['segments_info']})
        gt_boxes += [{'image_id': gt_ann['image_id'], 'category_id': s['category_id'],
                      'bbox': s['bbox'], 'iscrowd': s.get('iscrowd', 0)}
                     for s in gt_ann['segments_info'] if categories[s['category_id']]['isthing']]
        stem = Path(file_name).stem
        gt_grid, pred_grid = read_grid(gt_root, split, stem), read_grid(pred_root, split, stem)
        if gt_grid is not None and pred_grid is not None:
            grids.append((pred_grid, gt_grid))
    result = {'pq': evaluator.panoptic_quality()}
    result['miou'], result['iou_per_class'] = evaluator.mean_iou()
    if detections is not None:
        things = [{'id': c['id'], 'name': c['name']} for c in categories.values()
                  if c['isthing']]
        result['box'] = box_ap(gt_boxes, detections, things)
    if grids:
        scores = [occupancy_scores(p, g) for p, g in grids]
        result['occupancy'] = {k: float(np.nanmean([s[k] for s in scores]))
                               for k in scores[0]}
    result['images'] = len(gt_anns)
    return result


def format_table(result):
    pq = result['pq']
    lines = [f"images: {result['images']}", '',
             '|          |    PQ |    SQ |    RQ | classes |', '|---|---|---|---|---|']
    for name in ('all', 'things', 'stuff'):
        r = pq[name]
        lines.append(f"| {name:8s} | {r['pq']:5.1f} | {r['sq']:5.1f} | {r['rq']:5.1f} | "
                     f"{r['n']:7d} |")
    lines += ['', '| class | PQ | SQ | RQ | TP | FP | FN |', '|---|---|---|---|---|---|---|']
    for c in pq['per_class'].values():
        lines.append(f"| {c['name']} | {c['pq']:.1f} | {c['sq']:.1f} | {c['rq']:.1f} | "
                     f"{c['tp']} | {c['fp']} | {c['fn']} |")
    lines += ['', f"mIoU: {result['miou']:.1f}"]
    if 'box' in result:
        lines.append(f"box AP: {result['box']['ap']:.1f}  AP50: {result['box']['ap50']:.1f}")
    if 'occupancy' in result:
        o = result['occupancy']
        lines.append(f"occupancy: occupied IoU {o['occupied_iou']:.1f}, free IoU "
                     f"{o['free_iou']:.1f}, accuracy on known cells {o['known_accuracy']:.1f}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='panoptic-ros-eval', description=__doc__.split('\n')[0])
    parser.add_argument('--gt', type=Path, required=True)
    parser.add_argument('--pred', type=Path, required=True)
    parser.add_argument('--split', default='val')
    parser.add_argument('--detections', type=Path)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    detections = json.loads(args.detections.read_text()) if args.detections else None
    table = format_table(evaluate(args.gt, args.pred, args.split, detections))
    print(table)
    if args.out:
        args.out.write_text(table + '\n')


if __name__ == '__main__':
    main()
