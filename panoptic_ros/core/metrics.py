"""Stage: evaluation. Panoptic quality, mIoU, box AP and occupancy scores. Pure numpy.

Panoptic quality follows the COCO panoptic reference evaluation (Kirillov et al.; the
panopticapi pq_compute code) per image, accumulated per category:

- a ground-truth (gt) and a predicted segment of the same category match when their IoU is
  strictly greater than 0.5, where the union leaves out the predicted pixels on gt void;
- unmatched non-crowd gt segments are false negatives;
- an unmatched predicted segment is a false positive unless more than half of it lies on gt
  void or on a crowd region of its category;
- PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2) per
  category, averaged over the categories that occur (TP + FP + FN > 0), for all, things
  and stuff; reported in percent.

Labels are id images (int, 0 = void) with segment dicts {id: {'category_id', 'iscrowd'}}.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

VOID = 0
OFFSET = 1 << 32     # pair key = gt id * OFFSET + predicted id


@dataclass
class PQStat:
    """Per-category accumulators."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass
class PanopticEvaluator:
    """Accumulates PQ statistics and the semantic confusion matrix over images.

    categories: {category_id: {'name': str, 'isthing': bool}}.
    """

    categories: dict
    stats: dict = field(default_factory=lambda: defaultdict(PQStat))
    confusion: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, gt_ids, gt_segments, pred_ids, pred_segments):
        """Add one image: id images [H, W] and their segment dicts."""
        gt_ids = np.asarray(gt_ids, np.int64)
        pred_ids = np.asarray(pred_ids, np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f'gt {gt_ids.shape} and prediction {pred_ids.shape} differ')
        for ids, segments, what in ((gt_ids, gt_segments, 'gt'),
                                    (pred_ids, pred_segments, 'prediction')):
            unknown = set(np.unique(ids).tolist()) - set(segments) - {VOID}
            if unknown:
                raise ValueError(f'{what} ids {sorted(unknown)[:5]} are not in its segments')
        keys, counts = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
        pair_area = {(int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(keys, counts)}
        gt_area, pred_area = defaultdict(int), defaultdict(int)
        for (g, p), area in pair_area.items():
            gt_area[g] += area
            pred_area[p] += area
        self._semantic(pair_area, gt_segments, pred_segments)

        crowd_of = {s['category_id']: g for g, s in gt_segments.items() if s.get('iscrowd')}
        gt_matched, pred_matched = set(), set()
        for (g, p), intersection in pair_area.items():
            if g == VOID or p == VOID or gt_segments[g].get('iscrowd'):
                continue
            category = gt_segments[g]['category_id']
            if category != pred_segments[p]['category_id']:
                continue
            union = pred_area[p] + gt_area[g] - intersection - pair_area.get((VOID, p), 0)
            iou = intersection / union
            if iou > 0.5:
                self.stats[category].tp += 1
                self.stats[category].iou += iou
                gt_matched.add(g)
                pred_matched.add(p)
        for g, segment in gt_segments.items():
            if g in gt_matched or segment.get('iscrowd') or gt_area.get(g, 0) == 0:
                continue
            self.stats[segment['category_id']].fn += 1
        for p, segment in pred_segments.items():
            if p in pred_matched or pred_area.get(p, 0) == 0:
                continue
            ignored = pair_area.get((VOID, p), 0)
            crowd = crowd_of.get(segment['category_id'])
            if crowd is not None:
                ignored += pair_area.get((crowd, p), 0)
            if ignored / pred_area[p] > 0.5:
                continue
            self.stats[segment['category_id']].fp += 1

    def _semantic(self, pair_area, gt_segments, pred_segments):
        for (g, p), area in pair_area.items():
            if g == VOID:
                continue
            gt_category = gt_segments[g]['category_id']
            pred_category = pred_segments[p]['category_id'] if p != VOID else VOID
            self.confusion[(gt_category, pred_category)] += area

    def panoptic_quality(self):
        """{'all'|'things'|'stuff': {'pq', 'sq', 'rq', 'n'}, 'per_class': {name: {...}}}."""
        per_class = {}
        for category, info in self.categories.items():
            s = self.stats.get(category, PQStat())
            if s.tp + s.fp + s.fn == 0:
                continue
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            per_class[category] = {'name': info['name'], 'isthing': bool(info['isthing']),
                                   'pq': 100 * s.iou / denominator,
                                   'sq': 100 * s.iou / s.tp if s.tp else 0.0,
                                   'rq': 100 * s.tp / denominator,
                                   'tp': s.tp, 'fp': s.fp, 'fn': s.fn}
        result = {'per_class': per_class}
        for name, keep in (('all', lambda c: True), ('things', lambda c: c['isthing']),
                           ('stuff', lambda c: not c['isthing'])):
            chosen = [c for c in per_class.values() if keep(c)]
            result[name] = {k: float(np.mean([c[k] for c in chosen])) if chosen else 0.0
                            for k in ('pq', 'sq', 'rq')}
            result[name]['n'] = len(chosen)
        return result

    def mean_iou(self):
        """Semantic mIoU (percent) over the categories present in gt or prediction, gt void
        pixels ignored; also per class."""
        per_class = {}
        for category, info in self.categories.items():
            tp = self.confusion.get((category, category), 0)
            fn = sum(a for (g, p), a in self.confusion.items() if g == category and p != g)
            fp = sum(a for (g, p), a in self.confusion.items() if p == category and g != p)
            if tp + fn + fp:
                per_class[info['name']] = 100 * tp / (tp + fn + fp)
        miou = float(np.mean(list(per_class.values()))) if per_class else 0.0
        return miou, per_class


def box_ap(gt_boxes, detections, categories):
    """COCO box AP with pycocotools.

    Args:
        gt_boxes: list of dicts {image_id, category_id, bbox [x, y, w, h], iscrowd}.
        detections: list of dicts {image_id, category_id, bbox [x, y, w, h], score}.
        categories: list of {'id', 'name'} (thing classes).
    Returns:
        {'ap': AP@[.5:.95] percent, 'ap50': AP@.5 percent}; 0 when there are no detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io

    if not detections or not gt_boxes:
        return {'ap': 0.0, 'ap50': 0.0}
    gt = COCO()
    images = sorted({b['image_id'] for b in gt_boxes} | {d['image_id'] for d in detections})
    gt.dataset = {'images': [{'id': i} for i in images], 'categories': categories,
                  'annotations': [dict(b, id=k + 1, area=b['bbox'][2] * b['bbox'][3])
                                  for k, b in enumerate(gt_boxes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in detections])
        evaluation = COCOeval(gt, dt, 'bbox')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {'ap': 100 * max(evaluation.stats[0], 0.0), 'ap50': 100 * max(evaluation.stats[1], 0.0)}


def occupancy_scores(pred, gt, unknown=-1, free=0, occupied=100):
    """IoU of occupied cells, IoU of free cells and accuracy over the cells known in gt.

    pred, gt: int [H, W] grids (nav_msgs/OccupancyGrid values). Percent; a score whose union
    is empty is reported as NaN.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)

    def iou(value):
        p, g = pred == value, gt == value
        union = (p | g).sum()
        return 100 * (p & g).sum() / union if union else float('nan')

    known = gt != unknown
    accuracy = 100 * (pred[known] == gt[known]).mean() if known.any() else float('nan')
    return {'occupied_iou': iou(occupied), 'free_iou': iou(free), 'known_accuracy': accuracy}
