"""Evaluation step: run a FramePipeline over a dataset split and score it.

PQ / SQ / RQ (all, things, stuff), mIoU and COCO box AP, with the metrics of
panoptic_ros.core.metrics, on any COCO-panoptic-format split (the sim export's val split is
rendered at the camera resolution, 640x480). Category ids of the dataset are taken in
semantic-channel order, like training.

Two box APs: `box_ap` of the detections the node publishes (those above the pipeline's
score_threshold, the operating point: a precision-recall curve cut where the threshold
stops it), and `box_ap_ranked`, the COCO protocol's, of every detection scoring at least
RANKED_SCORE_THRESHOLD (0.05, as Detectron2 and torchvision evaluate; up to
max_detections per image), decoded from the same network outputs.
"""

import dataclasses
import time

import numpy as np

from panoptic_ros.core.data import CocoPanopticDataset
from panoptic_ros.core.inference import Decoder
from panoptic_ros.core.metrics import box_ap, PanopticEvaluator

RANKED_SCORE_THRESHOLD = 0.05


class _KeepRanked:
    """The pipeline's decoder, also decoding each frame's outputs at the ranked threshold."""

    def __init__(self, decoder):
        self.decoder, self.last = decoder, None
        ranked = dataclasses.replace(decoder.config, score_threshold=min(
            RANKED_SCORE_THRESHOLD, decoder.config.score_threshold))
        self.ranked = Decoder(decoder.anchors, decoder.thing_channels, ranked,
                              decoder.box_head)

    def __call__(self, raw, scale, image_size):
        self.last = self.ranked(raw, scale, image_size)
        return self.decoder(raw, scale, image_size)


def predicted_segments(result, categories):
    """(ids [H, W] int64 with dataset category ids, {id: segment}) of one FrameResult.

    Panoptic ids of the head are (channel + 1) * label_divisor + instance; they are rewritten
    to category_id * label_divisor + instance with the dataset's category ids.
    """
    out = result.panoptic
    divisor = out.label_divisor
    ids = out.panoptic.cpu().numpy().astype(np.int64)
    channel_to_category = np.array([0] + [c['id'] for c in categories], np.int64)
    remapped = channel_to_category[ids // divisor] * divisor + ids % divisor
    remapped[ids == 0] = 0
    segments = {}
    for seg in out.segments():
        category = int(channel_to_category[seg['category_id']])
        new_id = category * divisor + seg['segment_id'] % divisor
        segments[new_id] = {'id': new_id, 'category_id': category}
    return remapped, segments


def evaluate_pipeline(pipeline, root, split='val', limit=None, progress=None):
    """Scores of `pipeline` on a split: {'pq': {...}, 'miou', 'box_ap', 'images', 'seconds'}."""
    dataset = CocoPanopticDataset(root, split, pipeline.model_config.input_size,
                                  pipeline.model_config.mean, pipeline.model_config.std)
    categories = dataset.categories
    if [c['name'] for c in categories] != list(pipeline.model_config.classes):
        raise ValueError(f'dataset classes {[c["name"] for c in categories]} differ from the '
                         f'model classes {list(pipeline.model_config.classes)}')
    evaluator = PanopticEvaluator({c['id']: c for c in categories})
    gt_boxes, detections, ranked = [], [], []
    things = {c['id'] for c in categories if c['isthing']}
    count = len(dataset) if limit is None else min(limit, len(dataset))
    decoder = pipeline.decode
    pipeline.decode = keep = _KeepRanked(decoder)
    start = time.perf_counter()
    try:
        for index in range(count):
            rgb, gt_ids, gt_segments = dataset.load(index)
            image_id = dataset.images[index]['id']
            result = pipeline(rgb)
            pred_ids, pred_segments = predicted_segments(result, categories)
            evaluator.add(gt_ids, {s['id']: s for s in gt_segments}, pred_ids, pred_segments)
            gt_boxes += [{'image_id': image_id, 'category_id': s['category_id'],
                          'bbox': s['bbox'], 'iscrowd': s.get('iscrowd', 0)}
                         for s in gt_segments if s['category_id'] in things]
            detections += _detections(result.network, image_id, categories)
            ranked += _detections(keep.last, image_id, categories)
            if progress:
                progress(index + 1, count)
    finally:
        pipeline.decode = decoder
    seconds = time.perf_counter() - start
    miou, miou_per_class = evaluator.mean_iou()
    thing_categories = [{'id': c['id'], 'name': c['name']} for c in categories if c['isthing']]
    return {'pq': evaluator.panoptic_quality(), 'miou': miou, 'miou_per_class': miou_per_class,
            'box_ap': box_ap(gt_boxes, detections, thing_categories),
            'box_ap_ranked': box_ap(gt_boxes, ranked, thing_categories),
            'images': count, 'seconds': seconds}


def _detections(net, image_id, categories):
    """COCO detection records (xywh) of one frame's NetworkOutput."""
    return [{'image_id': image_id, 'category_id': categories[channel]['id'],
             'bbox': [box[0], box[1], box[2] - box[0], box[3] - box[1]], 'score': score}
            for box, score, channel in zip(net.boxes.tolist(), net.scores.tolist(),
                                           net.classes.tolist())]


def summary_line(scores):
    pq = scores['pq']
    return (f"PQ {pq['all']['pq']:.1f} (things {pq['things']['pq']:.1f}, stuff "
            f"{pq['stuff']['pq']:.1f}), mIoU {scores['miou']:.1f}, box AP "
            f"{scores['box_ap']['ap']:.1f} (AP50 {scores['box_ap']['ap50']:.1f}; ranked "
            f"{scores['box_ap_ranked']['ap']:.1f}) on "
            f"{scores['images']} images")
