"""Metrics (panoptic_ros.core.metrics, panoptic-ros-eval), edge cases worked by hand.

Verifies, on small id images whose answers are computed by hand in the comments: a perfect
prediction, an IoU of exactly 0.5 (not a match), empty prediction, empty ground truth, void
pixels (left out of the union; predictions mostly on void are not false positives), crowd
regions, per-category averaging over things and stuff, mIoU, box AP and occupancy scores;
and the CLI end to end on an exported dataset evaluated against itself and against an empty
prediction. Does not verify agreement with panopticapi itself (not installable here).
"""

import json

import cv2
import numpy as np
import pytest

from panoptic_ros.core.metrics import box_ap, occupancy_scores, PanopticEvaluator
from panoptic_ros.eval_cli import evaluate, main
from panoptic_ros.sim_cli import main as sim_main

pytestmark = pytest.mark.pure

CATEGORIES = {1: {'name': 'road', 'isthing': False}, 5: {'name': 'car', 'isthing': True}}
ROAD, CAR = {'category_id': 1}, {'category_id': 5}


def pq_of(gt, gt_segments, pred, pred_segments):
    evaluator = PanopticEvaluator(CATEGORIES)
    evaluator.add(np.array(gt), gt_segments, np.array(pred), pred_segments)
    return evaluator.panoptic_quality()


def test_perfect_prediction():
    gt = [[1000, 1000, 5001, 5001]]
    result = pq_of(gt, {1000: ROAD, 5001: CAR}, gt, {1000: ROAD, 5001: CAR})
    assert result['all'] == {'pq': 100.0, 'sq': 100.0, 'rq': 100.0, 'n': 2}


def test_iou_exactly_half_is_not_a_match():
    # gt car = 4 px; predicted car = 2 of them: IoU = 2 / 4 = 0.5 -> FN 1 and FP 1, PQ 0.
    gt = [[5001, 5001, 5001, 5001]]
    pred = [[7, 7, 1000, 1000]]
    result = pq_of(gt, {5001: CAR}, pred, {7: CAR, 1000: ROAD})
    car = result['per_class'][5]
    assert (car['tp'], car['fp'], car['fn'], car['pq']) == (0, 1, 1, 0.0)
    # One more pixel: IoU = 3 / 4 > 0.5 -> TP, PQ = SQ = 75, RQ = 100.
    result = pq_of(gt, {5001: CAR}, [[7, 7, 7, 1000]], {7: CAR, 1000: ROAD})
    car = result['per_class'][5]
    assert (car['tp'], car['fp'], car['fn']) == (1, 0, 0)
    assert car['pq'] == pytest.approx(75.0) and car['rq'] == 100.0


def test_empty_prediction_and_empty_ground_truth():
    gt = [[1000, 5001]]
    result = pq_of(gt, {1000: ROAD, 5001: CAR}, [[0, 0]], {})
    assert result['all']['pq'] == 0.0 and result['per_class'][5]['fn'] == 1
    # Empty gt (all void): predictions on void are ignored, nothing is counted.
    result = pq_of([[0, 0]], {}, [[1000, 5001]], {1000: ROAD, 5001: CAR})
    assert result['per_class'] == {} and result['all']['n'] == 0


def test_void_pixels_leave_the_union_and_excuse_predictions():
    # gt car 2 px + 2 void px; predicted car covers all 4: union = 4 + 2 - 2 - 2 = 2,
    # IoU = 1 -> TP with IoU 1.
    result = pq_of([[5001, 5001, 0, 0]], {5001: CAR}, [[3, 3, 3, 3]], {3: CAR})
    assert result['per_class'][5]['tp'] == 1 and result['per_class'][5]['pq'] == 100.0
    # A predicted car 3/4 on void is not a false positive (> half ignored)...
    result = pq_of([[1000, 0, 0, 0]], {1000: ROAD}, [[3, 3, 3, 3]], {3: CAR})
    assert 5 not in result['per_class'] and result['per_class'][1]['fn'] == 1
    # ...but one half on void is (0.5 is not more than half).
    result = pq_of([[1000, 1000, 0, 0]], {1000: ROAD}, [[3, 3, 3, 3]], {3: CAR})
    assert result['per_class'][5]['fp'] == 1


def test_crowd_regions():
    # A crowd of cars: never a FN, never matched; a predicted car mostly inside it is no FP.
    gt = [[5009, 5009, 5009, 1000]]
    gt_segments = {5009: {'category_id': 5, 'iscrowd': 1}, 1000: ROAD}
    result = pq_of(gt, gt_segments, [[3, 3, 3, 1000]], {3: CAR, 1000: ROAD})
    assert 5 not in result['per_class']
    assert result['per_class'][1]['tp'] == 1


def test_things_and_stuff_are_averaged_per_category():
    # road matched with IoU 3/4 -> PQ 75; car missed -> PQ 0; all = 37.5.
    gt = [[1000, 1000, 1000, 5001]]
    result = pq_of(gt, {1000: ROAD, 5001: CAR}, [[1000, 1000, 1000, 1000]], {1000: ROAD})
    assert result['stuff']['pq'] == pytest.approx(75.0)
    assert result['things']['pq'] == 0.0 and result['all']['pq'] == pytest.approx(37.5)


def test_mean_iou():
    evaluator = PanopticEvaluator(CATEGORIES)
    # road: TP 2, FN 1 (gt road predicted car) -> 2/3; car: TP 1, FP 1 -> 1/2.
    evaluator.add(np.array([[1000, 1000, 1000, 5001, 0]]), {1000: ROAD, 5001: CAR},
                  np.array([[1000, 1000, 5002, 5002, 5002]]), {1000: ROAD, 5002: CAR})
    miou, per_class = evaluator.mean_iou()
    assert per_class == pytest.approx({'road': 200 / 3, 'car': 50.0})
    assert miou == pytest.approx((200 / 3 + 50) / 2)


def test_mismatched_inputs_raise():
    evaluator = PanopticEvaluator(CATEGORIES)
    with pytest.raises(ValueError, match='differ'):
        evaluator.add(np.zeros((2, 2)), {}, np.zeros((2, 3)), {})
    with pytest.raises(ValueError, match='not in its segments'):
        evaluator.add(np.array([[4]]), {}, np.array([[0]]), {})


def test_box_ap():
    gt = [{'image_id': 1, 'category_id': 5, 'bbox': [10, 10, 20, 20], 'iscrowd': 0}]
    perfect = [{'image_id': 1, 'category_id': 5, 'bbox': [10, 10, 20, 20], 'score': 0.9}]
    assert box_ap(gt, perfect, [{'id': 5, 'name': 'car'}])['ap'] == pytest.approx(100.0)
    shifted = [{'image_id': 1, 'category_id': 5, 'bbox': [30, 30, 20, 20], 'score': 0.9}]
    assert box_ap(gt, shifted, [{'id': 5, 'name': 'car'}])['ap50'] == 0.0
    assert box_ap(gt, [], [{'id': 5, 'name': 'car'}]) == {'ap': 0.0, 'ap50': 0.0}


def test_occupancy_scores():
    gt = np.array([[100, 100, 0, 0, -1]])
    pred = np.array([[100, 0, 0, -1, 100]])
    scores = occupancy_scores(pred, gt)
    assert scores['occupied_iou'] == pytest.approx(100 / 3)   # 1 of {0, 1, 4}
    assert scores['free_iou'] == pytest.approx(100 / 3)       # 1 of {1, 2, 3}
    assert scores['known_accuracy'] == pytest.approx(50.0)    # cells 0..3: 0 and 2 agree


def test_cli_on_an_exported_dataset(tmp_path, capsys):
    sim_main(['export', '--out', str(tmp_path / 'gt'), '--split', 'val', '--num', '3',
              '--seed', '3', '--width', '160', '--height', '120', '--no-progress'])
    main(['--gt', str(tmp_path / 'gt'), '--pred', str(tmp_path / 'gt'), '--split', 'val',
          '--out', str(tmp_path / 'table.md')])
    printed = capsys.readouterr().out
    assert '| all      | 100.0 | 100.0 | 100.0 |' in printed
    assert 'occupancy: occupied IoU 100.0' in printed
    assert 'mIoU: 100.0' in (tmp_path / 'table.md').read_text()
    # An empty prediction (all void, no segments, unknown grids) scores 0.
    empty = tmp_path / 'empty'
    data = json.loads((tmp_path / 'gt' / 'annotations' / 'panoptic_val.json').read_text())
    for ann in data['annotations']:
        ann['segments_info'] = []
    (empty / 'annotations').mkdir(parents=True)
    (empty / 'annotations' / 'panoptic_val.json').write_text(json.dumps(data))
    (empty / 'panoptic' / 'val').mkdir(parents=True)
    for ann in data['annotations']:
        cv2.imwrite(str(empty / 'panoptic' / 'val' / ann['file_name']),
                    np.zeros((120, 160, 3), np.uint8))
    result = evaluate(tmp_path / 'gt', empty, 'val')
    assert result['pq']['all']['pq'] == 0.0 and result['miou'] == 0.0
