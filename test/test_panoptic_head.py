"""The panoptic head (panoptic_ros.core.head).

Verifies: exact agreement with a loop-based numpy reference (test/panoptic_head_reference.py)
on 200 random inputs per policy (random and quantised logits with ties, overlapping and
duplicate boxes, padding, no detections, all-stuff images, unknowns on and off, stuff and
instance removal); the paper's cases (three overlapping cars, a false detection corrected by
the semantic branch, unknowns, closest-center borders following the objects); Panoptic-
DeepLab's center grouping on hand-made blobs (two instances, a class by majority, scores by
hand, no detection read, refused for a model without the heatmap); output
resolution options; input contract errors. Runs on the CPU; the CUDA variants run when a GPU
is present. Does not verify speed (benchmarks/bench_panoptic_head.py).
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from panoptic_ros.core.head import (
    FORMS, POLICIES, PanopticHead, PanopticHeadConfig, pad_detections)
from panoptic_ros.core.head.learned import MaskRefinement, SpatialRankingModule
from panoptic_ros.core.head.policies import REGISTRY
from panoptic_ros.core.inference import check_policy_inputs
from panoptic_ros.core.model import ModelConfig
from panoptic_head_reference import BorderlineCase, reference_head

pytestmark = pytest.mark.pure

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
# Policies that resolve the detections' overlaps (the numpy oracle's); center_grouping makes
# its own instances and has its own cases below.
BOX_POLICIES = [name for name in POLICIES if not REGISTRY[name].makes_detections]


def random_case(rng, num_detections=None):
    """Random head inputs: C classes (>= 1 stuff, >= 1 thing), N detection slots."""
    num_classes = int(rng.integers(2, 7))
    is_thing = rng.random(num_classes) < 0.5
    is_thing[0], is_thing[-1] = False, True
    rng.shuffle(is_thing)
    h, w = int(rng.integers(4, 20)), int(rng.integers(4, 20))
    kind = rng.choice(['normal', 'quantised', 'all_stuff'])
    logits = rng.standard_normal((num_classes, h, w)).astype(np.float32)
    if kind == 'quantised':  # many exact ties between classes
        logits = np.round(logits * 2) / 2
    if kind == 'all_stuff':
        logits[is_thing] -= 10.0
    n = int(rng.integers(1, 9)) if num_detections is None else num_detections
    thing_channels = np.flatnonzero(is_thing)
    classes = rng.choice(thing_channels, size=n)
    x1 = rng.uniform(-2, w, n)
    y1 = rng.uniform(-2, h, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0, w, n), y1 + rng.uniform(0, h, n)], 1)
    if rng.random() < 0.3:  # edges exactly on pixel centres (x.5): the inclusive bounds
        boxes = np.round(boxes * 2 + 1) / 2 - 0.5 * (rng.random((n, 4)) < 0.5)
    if n > 1 and rng.random() < 0.3:  # an exact duplicate box of the same class
        boxes[1], classes[1] = boxes[0], classes[0]
    scores = rng.random(n).astype(np.float32)
    if rng.random() < 0.2:
        scores[:] = scores[0]  # equal scores: ties broken by detection order
    valid = rng.random(n) < 0.85
    if rng.random() < 0.1:
        valid[:] = False  # no detections at all
    offsets = rng.normal(0, 3, (2, h, w)).astype(np.float32)
    borderness = rng.random((h, w)).astype(np.float32)
    if rng.random() < 0.3:   # exact ties of the border-ness distance
        borderness = np.round(borderness * 2) / 2
    return dict(sem_logits=logits, center_offsets=offsets, boxes=boxes.astype(np.float32),
                scores=scores, classes=classes.astype(np.int64), valid=valid,
                is_thing=is_thing, borderness_map=borderness,
                learned=random_learned(rng, int(is_thing.sum()), num_classes))


def random_learned(rng, num_things, num_classes):
    """Randomly weighted learned parts: {policy: module}."""
    torch.manual_seed(int(rng.integers(1 << 31)))
    ranking = SpatialRankingModule(num_things, kernel=3)
    refine = MaskRefinement(num_things, num_classes, kernel=3)
    with torch.no_grad():
        for p in refine.parameters():
            p.add_(torch.randn_like(p) * 2)
        refine.enabled.copy_(torch.from_numpy(rng.random(num_things) < 0.7))
    return {'spatial_ranking': ranking, 'refined': refine}


def run_head(case, device='cpu', form='fast', **config):
    config = PanopticHeadConfig(**config)
    learned = REGISTRY[config.policy].learned
    head = PanopticHead(case['is_thing'], config, form,
                        case['learned'][learned] if learned else None).to(device)
    t = {k: torch.as_tensor(v, device=device) for k, v in case.items()
         if k not in ('is_thing', 'learned')}
    borderness = t.get('borderness_map')
    if borderness is None:
        borderness = torch.zeros(t['sem_logits'].shape[1:], device=device)
    return head(t['sem_logits'], t['center_offsets'], t['boxes'], t['scores'], t['classes'],
                t['valid'], borderness_map=borderness[None])


def assert_matches_reference(case, out, **config):
    learned = REGISTRY[config['policy']].learned
    oracle_case = {k: v for k, v in case.items() if k != 'learned'}
    if learned:
        oracle_case['learned'] = case['learned'][learned]
    try:
        panoptic, segments, det_ids = reference_head(**oracle_case, **config)
    except BorderlineCase:
        return
    np.testing.assert_array_equal(out.panoptic.cpu().numpy(), panoptic)
    assert out.det_segment_id.cpu().tolist() == det_ids
    got = {s['segment_id']: s for s in out.segments()}
    assert sorted(got) == sorted(segments)
    for segment_id, ref in segments.items():
        seg = got[segment_id]
        assert (seg['category_id'], seg['is_thing'], seg['area']) == \
            (ref['category_id'], ref['is_thing'], ref['area'])
        assert seg['box'] == [float(v) for v in ref['box']]
        assert seg['score'] == pytest.approx(ref['score'], rel=1e-4, abs=1e-5)
    np.testing.assert_array_equal(out.semantic().cpu().numpy(), panoptic // 1000)


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_matches_reference_on_random_inputs(policy, form):
    rng = np.random.default_rng(list(POLICIES).index(policy))
    for trial in range(200):
        case = random_case(rng)
        config = dict(policy=policy, unknowns=bool(rng.random() < 0.7),
                      stuff_area_fraction=float(rng.choice([0.0, 0.05, 0.2])),
                      min_kept_fraction=float(rng.choice([0.0, 0.5])),
                      paste_overlap=float(rng.choice([0.0, 0.3, 1.0])))
        out = run_head(case, form=form, **config)
        try:
            assert_matches_reference(case, out, **config)
        except AssertionError as error:
            raise AssertionError(f'trial {trial}, config {config}') from error


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_matches_reference_with_many_detections(policy, form):
    """More than 62 detection slots: the bit sets of the rank policies span several words."""
    rng = np.random.default_rng(200 + list(POLICIES).index(policy))
    for trial in range(6):
        case = random_case(rng, num_detections=int(rng.integers(63, 131)))
        out = run_head(case, form=form, policy=policy, stuff_area_fraction=0.0,
                       min_kept_fraction=0.3)
        try:
            assert_matches_reference(case, out, policy=policy, min_kept_fraction=0.3)
        except AssertionError as error:
            raise AssertionError(f'trial {trial}') from error


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_cuda_matches_cpu(policy):
    rng = np.random.default_rng(100 + list(POLICIES).index(policy))
    for _ in range(50):
        case = random_case(rng)
        cpu = run_head(case, 'cpu', policy=policy)
        cuda = run_head(case, 'cuda', policy=policy)
        assert torch.equal(cpu.panoptic, cuda.panoptic.cpu())
        assert torch.equal(cpu.area, cuda.area.cpu())


# The paper's cases. Classes: 0 road (stuff), 1 sky (stuff), 2 car (thing), 3 person (thing).
IS_THING = [False, False, True, True]
ROAD, SKY, CAR, PERSON = range(4)


def scene(h=40, w=60):
    """Road everywhere (logit 1), other classes at 0."""
    logits = np.zeros((4, h, w), np.float32)
    logits[ROAD] = 1.0
    return logits


def head_inputs(logits, boxes, scores, classes, offsets=None, max_detections=8):
    boxes, scores, classes, valid = pad_detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32), torch.tensor(classes, dtype=torch.long),
        max_detections)
    if offsets is None:
        offsets = np.zeros((2,) + logits.shape[1:], np.float32)
    return (torch.from_numpy(logits), torch.from_numpy(offsets), boxes, scores, classes, valid)


def make_head(policy, is_thing=IS_THING, **config):
    """{inputs} -> the head of `policy`, its learned part at its initialisation (the
    refinement starts as the identity on the mask), a flat border-ness map of 0.5."""
    torch.manual_seed(0)
    things, classes = sum(is_thing), len(is_thing)
    learned = {'spatial_ranking': SpatialRankingModule(things),
               'refined': MaskRefinement(things, classes)}.get(REGISTRY[policy].learned)
    head = PanopticHead(is_thing, PanopticHeadConfig(policy=policy, **config),
                        learned=learned)

    def run(*inputs):
        return head(*inputs, borderness_map=torch.full((1,) + inputs[0].shape[1:], 0.5))
    return run


@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_three_overlapping_cars_give_three_instances(policy):
    logits = scene()
    logits[CAR, 10:30, 5:25] = 3.0
    logits[CAR, 12:32, 20:40] = 3.0
    logits[CAR, 8:28, 35:55] = 3.0
    boxes = [[5, 10, 25, 30], [20, 12, 40, 32], [35, 8, 55, 28]]
    head = make_head(policy, stuff_area_fraction=0)
    out = head(*head_inputs(logits, boxes, [0.9, 0.8, 0.7], [CAR] * 3))
    things = [s for s in out.segments() if s['is_thing']]
    assert len(things) == 3
    assert {s['category_id'] for s in things} == {CAR + 1}
    assert all(s['area'] > 100 for s in things)
    assert out.det_segment_id[:3].tolist() == [3001, 3002, 3003]
    assert out.det_segment_id[3:].tolist() == [0] * 5
    # Every car pixel belongs to one of the three instances; the rest is road.
    car = logits[CAR] == 3.0
    assert (out.panoptic.numpy()[car] // 1000 == CAR + 1).all()
    assert (out.panoptic.numpy()[~car] == (ROAD + 1) * 1000).all()


@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_false_detection_is_corrected_by_semantics(policy):
    logits = scene()
    logits[CAR, 5:20, 5:20] = 3.0          # a real car
    # A detection of a person where the semantic branch sees only road.
    head = make_head(policy, stuff_area_fraction=0)
    out = head(*head_inputs(logits, [[5, 5, 20, 20], [30, 10, 50, 30]], [0.9, 0.95],
                            [CAR, PERSON]))
    assert out.det_segment_id[:2].tolist() == [3001, 0]
    assert [s['category_id'] for s in out.segments() if s['is_thing']] == [CAR + 1]
    assert (out.panoptic.numpy()[10:30, 30:50] == (ROAD + 1) * 1000).all()


@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_thing_pixels_outside_boxes_are_void_with_unknowns(policy):
    logits = scene()
    logits[CAR, 5:15, 5:15] = 3.0          # detected
    logits[CAR, 25:35, 40:50] = 3.0        # not detected
    inputs = head_inputs(logits, [[5, 5, 15, 15]], [0.9], [CAR])
    with_unknowns = make_head(policy, unknowns=True, stuff_area_fraction=0)(*inputs)
    assert (with_unknowns.panoptic.numpy()[25:35, 40:50] == 0).all()
    without = make_head(policy, unknowns=False, stuff_area_fraction=0)(*inputs)
    assert (without.panoptic.numpy()[25:35, 40:50] == (ROAD + 1) * 1000).all()
    for out in (with_unknowns, without):
        assert (out.panoptic.numpy()[5:15, 5:15] == 3001).all()


def discs(h, w, centres, radius):
    rows, cols = np.mgrid[0:h, 0:w]
    return [((cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2) <= radius ** 2
            for cx, cy in centres]


def test_closest_center_borders_follow_the_objects():
    h, w, radius = 48, 64, 12.0
    centres = [(24.0, 24.0), (42.0, 24.0)]    # two touching discs whose boxes overlap
    masks = discs(h, w, centres, radius)
    masks[1] &= ~masks[0]
    logits = scene(h, w)
    offsets = np.zeros((2, h, w), np.float32)
    for (cx, cy), mask in zip(centres, masks):
        logits[CAR][mask] = 3.0
        rows, cols = np.nonzero(mask)
        offsets[0][mask] = cx - (cols + 0.5)     # ideal offsets to the object's centre
        offsets[1][mask] = cy - (rows + 0.5)
    boxes = [[cx - radius, cy - radius, cx + radius, cy + radius] for cx, cy in centres]
    inputs = head_inputs(logits, boxes, [0.9, 0.8], [CAR, CAR], offsets)

    def ious(policy):
        out = PanopticHead(IS_THING, PanopticHeadConfig(policy=policy,
                                                        stuff_area_fraction=0))(*inputs)
        panoptic = out.panoptic.numpy()
        found = [panoptic == 3001 + k for k in range(2)]
        return [(found[k] & masks[k]).sum() / (found[k] | masks[k]).sum() for k in range(2)]

    assert ious('closest_center') == [1.0, 1.0]
    # Box-order policies cut the second disc with the first box's straight edge.
    assert min(ious('highest_confidence')) < 0.95


def test_stuff_removal_scales_with_image_area():
    logits = scene(40, 60)
    logits[SKY, :2, :10] = 5.0                  # 20 px of sky: 0.83 % of the image
    config = PanopticHeadConfig(policy='highest_confidence', stuff_area_fraction=0.01)
    out = PanopticHead(IS_THING, config)(*head_inputs(logits, [[0, 0, 1, 1]], [0.5], [CAR]))
    assert (out.panoptic.numpy()[:2, :10] == 0).all()
    logits_big = np.repeat(np.repeat(logits, 2, 1), 2, 2)   # same scene, 4x the pixels
    out = PanopticHead(IS_THING, config)(*head_inputs(logits_big, [[0, 0, 1, 1]], [0.5], [CAR]))
    assert (out.panoptic.numpy()[:4, :20] == 0).all()
    kept = PanopticHead(IS_THING, PanopticHeadConfig(stuff_area_fraction=0.005))(
        *head_inputs(logits, [[0, 0, 1, 1]], [0.5], [CAR]))
    assert (kept.panoptic.numpy()[:2, :10] == (SKY + 1) * 1000).all()


@pytest.mark.parametrize('device', DEVICES)
def test_upsampling_modes_give_input_resolution(device):
    logits = scene(30, 40)
    logits[CAR, 10:20, 10:20] = 3.0
    inputs = [t.to(device) for t in head_inputs(logits, [[40, 40, 80, 80]], [0.9], [CAR])]
    head = PanopticHead(IS_THING, PanopticHeadConfig(stuff_area_fraction=0)).to(device)
    for mode in ('labels', 'logits'):
        out = head(*inputs, image_size=(120, 160), upsample=mode)
        assert out.panoptic.shape == (120, 160) and out.panoptic.dtype == torch.int32
        car = out.panoptic.cpu().numpy() == 3001
        assert abs(car.sum() - 40 * 40) <= 4 * 40     # the car's 40 x 40 input pixels
        rows, cols = np.nonzero(car)
        assert out.segments()[-1]['box'] == [cols.min(), rows.min(), cols.max() + 1,
                                             rows.max() + 1]


def test_pad_detections_keeps_the_best():
    boxes = torch.arange(20, dtype=torch.float32).reshape(5, 4)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    classes = torch.arange(5)
    b, s, c, v = pad_detections(boxes, scores, classes, 3)
    assert s.tolist() == pytest.approx([0.9, 0.5, 0.7]) and c.tolist() == [1, 2, 3]
    assert v.all()
    b, s, c, v = pad_detections(boxes[:0], scores[:0], classes[:0], 4)
    assert b.shape == (4, 4) and not v.any()


def test_contract_errors_name_the_problem():
    head = PanopticHead(IS_THING)
    good = head_inputs(scene(), [[0, 0, 5, 5]], [0.5], [CAR])
    with pytest.raises(ValueError, match='sem_logits must be'):
        head(good[0][:3], *good[1:])
    with pytest.raises(ValueError, match='center_offsets must be'):
        head(good[0], good[1][:, :5], *good[2:])
    with pytest.raises(ValueError, match='must agree'):
        head(*good[:3], good[3][:2], *good[4:])
    with pytest.raises(ValueError, match='int64'):
        head(*good[:4], good[4].int(), good[5])
    with pytest.raises(ValueError, match='unknown overlap policy'):
        PanopticHeadConfig(policy='largest')
    with pytest.raises(ValueError, match='stuff_area_fraction'):
        PanopticHeadConfig(stuff_area_fraction=2.0)
    with pytest.raises(ValueError, match='at least one stuff and one thing'):
        PanopticHead([True, True])


@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_fast_form_equals_reference_form(policy):
    rng = np.random.default_rng(300 + list(POLICIES).index(policy))
    for _ in range(100):
        case = random_case(rng, num_detections=int(rng.integers(1, 40)))
        config = dict(policy=policy, stuff_area_fraction=float(rng.choice([0, 0.05])),
                      unknowns=bool(rng.random() < 0.7))
        fast, ref = run_head(case, form='fast', **config), run_head(case, form='reference',
                                                                    **config)
        assert torch.equal(fast.panoptic, ref.panoptic)
        assert torch.equal(fast.det_segment_id, ref.det_segment_id)
        assert torch.equal(fast.area, ref.area) and torch.equal(fast.box, ref.box)
        torch.testing.assert_close(fast.score, ref.score)


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('policy', BOX_POLICIES)
def test_a_thing_wins_an_exact_tie_with_stuff_everywhere(policy, form):
    # 1 x 2 image, every logit 1, channel 0 a thing, channel 1 stuff; a box of channel 0
    # covers the left pixel only: the left pixel is the detection, the right one an
    # unexplained thing pixel (void with unknowns, the stuff class without).
    case = dict(sem_logits=np.ones((2, 1, 2), np.float32),
                center_offsets=np.zeros((2, 1, 2), np.float32),
                boxes=np.array([[0, 0, 1, 1]], np.float32), scores=np.array([0.9], np.float32),
                classes=np.array([0]), valid=np.array([True]), is_thing=[True, False],
                learned={'spatial_ranking': SpatialRankingModule(1),
                         'refined': MaskRefinement(1, 2)})
    out = run_head(case, form=form, policy=policy, stuff_area_fraction=0.0)
    assert out.panoptic.tolist() == [[1 * 1000 + 1, 0]]
    out = run_head(case, form=form, policy=policy, stuff_area_fraction=0.0, unknowns=False)
    assert out.panoptic.tolist() == [[1 * 1000 + 1, 2 * 1000]]
    for config in (dict(unknowns=True), dict(unknowns=False)):
        assert_matches_reference(case, run_head(case, form=form, policy=policy,
                                                stuff_area_fraction=0.0, **config),
                                 policy=policy, stuff_area_fraction=0.0, **config)


def test_label_divisor_must_exceed_the_detection_slots():
    # divisor 2 with three cars: ids 2 * 2 + 3 = 7 would decode to category 3, not the car's
    case = random_case(np.random.default_rng(3), num_detections=3)
    with pytest.raises(ValueError, match='label_divisor 2 must exceed the 3 detection slots'):
        run_head(case, label_divisor=2)
    run_head(case, label_divisor=4)   # above the slot count: accepted


def two_blobs():
    """Stuff channel 0, thing channels 1 and 2 on an 8 x 12 grid of 1-px cells: blob A (rows
    1-3, cols 1-3) of class 1; blob B (rows 4-6, cols 7-10) of class 1 except 4 pixels that
    say class 2; ideal offsets to each blob's centre; heatmap peaks at both centres."""
    h, w = 8, 12
    logits = torch.zeros(3, h, w)
    logits[0] = 1.0
    logits[1, 1:4, 1:4] = 3.0
    logits[1, 4:7, 7:11] = 3.0
    logits[2, 5:7, 7:9] = 4.0
    heatmap = torch.zeros(1, h, w)
    heatmap[0, 2, 2], heatmap[0, 5, 9] = 0.9, 0.8
    x, y = torch.arange(w) + 0.5, torch.arange(h) + 0.5
    offsets = torch.zeros(2, h, w)
    for r0, r1, c0, c1, cy, cx in [(1, 4, 1, 4, 2.5, 2.5), (4, 7, 7, 11, 5.5, 9.5)]:
        offsets[0, r0:r1, c0:c1] = cx - x[c0:c1]
        offsets[1, r0:r1, c0:c1] = (cy - y[r0:r1])[:, None]
    return logits, offsets, heatmap


def test_center_grouping_two_blobs_and_a_majority_class():
    logits, offsets, heatmap = two_blobs()
    # The detection branch off: only padding (any boxes would be ignored anyway).
    detections = pad_detections(torch.zeros(0, 4), torch.zeros(0),
                                torch.zeros(0, dtype=torch.int64), 10)
    head = PanopticHead([False, True, True], PanopticHeadConfig(policy='center_grouping',
                                                                stuff_area_fraction=0.0))
    out = head(logits, offsets, *detections, center_heatmap=heatmap)
    things = [s for s in out.segments() if s['is_thing']]
    assert [(s['category_id'], s['area'], s['box']) for s in things] == [
        (2, 9, [1.0, 1.0, 4.0, 4.0]), (2, 12, [7.0, 4.0, 11.0, 7.0])]   # B: 8 of 12 say 2
    panoptic = out.panoptic
    assert (panoptic[1:4, 1:4] == things[0]['segment_id']).all()
    assert (panoptic[4:7, 7:11] == things[1]['segment_id']).all()
    assert ((panoptic // 1000) == 1).sum() == 8 * 12 - 9 - 12
    # Scores: peak x mean probability of the voted class over the instance's pixels.
    p_a = torch.softmax(torch.tensor([1.0, 3.0, 0.0]), 0)[1]
    p_b = torch.softmax(torch.tensor([1.0, 3.0, 4.0]), 0)[1]
    assert things[0]['score'] == pytest.approx(0.9 * float(p_a), rel=1e-5)
    assert things[1]['score'] == pytest.approx(0.8 * float(8 * p_a + 4 * p_b) / 12, rel=1e-5)


def test_center_grouping_keypoint_nms_and_threshold():
    logits, offsets, heatmap = two_blobs()
    detections = pad_detections(torch.zeros(0, 4), torch.zeros(0),
                                torch.zeros(0, dtype=torch.int64), 10)
    # A weaker maximum next to A's peak is suppressed by the 3-cell window; B's peak below the
    # threshold leaves B's pixels to A's centre (the only one left), and nothing is void.
    heatmap[0, 2, 3] = 0.85
    heatmap[0, 5, 9] = 0.05
    head = PanopticHead([False, True, True], PanopticHeadConfig(policy='center_grouping',
                                                                stuff_area_fraction=0.0))
    things = [s for s in head(logits, offsets, *detections, center_heatmap=heatmap).segments()
              if s['is_thing']]
    assert [(s['area'], s['box']) for s in things] == [(21, [1.0, 1.0, 11.0, 7.0])]
    # No centre at all: thing pixels are unknowns (void), stuff stays.
    out = head(logits, offsets, *detections, center_heatmap=torch.zeros(1, 8, 12))
    assert not any(s['is_thing'] for s in out.segments())
    assert (out.panoptic == 0).sum() == 21


def test_a_policy_without_its_network_output_is_refused():
    classes, is_thing = ('ground', 'car', 'duck'), (False, True, True)
    light = ModelConfig(classes, is_thing, box_head='retinanet', center_heatmap=False)
    with pytest.raises(ValueError, match="'center_grouping' needs the network output.*"
                                         "center_heatmap"):
        check_policy_inputs(REGISTRY['center_grouping'], light)
    check_policy_inputs(REGISTRY['center_grouping'],
                        ModelConfig(classes, is_thing, center_heatmap=True))
    with pytest.raises(ValueError, match="'closest_borderness' needs the network output.*"
                                         "borderness_map"):
        check_policy_inputs(REGISTRY['closest_borderness'], light)
    check_policy_inputs(REGISTRY['closest_borderness'],
                        ModelConfig(classes, is_thing, borderness_map=True))
    for name in BOX_POLICIES:
        if name != 'closest_borderness':
            check_policy_inputs(REGISTRY[name], light)
    # A learned policy without its weights.
    for name in ('spatial_ranking', 'refined'):
        with pytest.raises(ValueError, match=f"'{name}' needs its learned"):
            PanopticHead([False, True, True], PanopticHeadConfig(policy=name))
    head = PanopticHead([False, True, True], PanopticHeadConfig(policy='center_grouping'))
    logits, offsets, _ = two_blobs()
    with pytest.raises(ValueError, match='center heatmap'):
        head(logits, offsets, *pad_detections(torch.zeros(0, 4), torch.zeros(0),
                                              torch.zeros(0, dtype=torch.int64), 4))


def test_closest_borderness_gives_an_overlap_pixel_to_the_closer_box():
    # Two car boxes overlapping on columns 10-14; the whole area is car. Border-ness of pixel
    # (row 5, column 12) (centre 12.5, 5.5) in box A [0, 0, 15, 11]: sqrt(2.5/12.5 * 5.5/5.5)
    # = 0.447; in box B [10, 0, 30, 11]: sqrt(2.5/17.5 * 1) = 0.378. A predicted 0.38 is
    # closer to B's: the pixel goes to B although A is the more confident and paste gives it
    # to A.
    logits = scene(11, 30)
    logits[CAR] = 3.0
    inputs = head_inputs(logits, [[0, 0, 15, 11], [10, 0, 30, 11]], [0.9, 0.8], [CAR, CAR])
    borderness = torch.full((1, 11, 30), 0.38)
    head = PanopticHead(IS_THING, PanopticHeadConfig(policy='closest_borderness',
                                                     stuff_area_fraction=0, paste_overlap=1.0))
    pasted = PanopticHead(IS_THING, PanopticHeadConfig(policy='paste', stuff_area_fraction=0,
                                                       paste_overlap=1.0))(*inputs)
    assert pasted.panoptic[5, 12] == 3001
    for form in FORMS:
        head.form = form
        head._assign = getattr(head.policy, form)
        out = head(*inputs, borderness_map=borderness)
        assert out.panoptic[5, 12] == 3002, form
        # Outside the overlap nothing changes; a predicted 0.45 keeps the pixel in A.
        assert torch.equal(out.panoptic[:, :10], pasted.panoptic[:, :10])
        assert head(*inputs, borderness_map=torch.full((1, 11, 30), 0.45)).panoptic[5, 12] \
            == 3001


def test_a_ranking_map_that_prefers_the_smaller_instance_puts_it_on_top():
    # A small car box inside a large one, the large one more confident: highest_confidence
    # gives the overlap to the large. The ranking module here scores a pixel of class car by
    # the 3 x 3 sum of the car instance map ('no thing' logit 0): lower at the union's edge,
    # which only the large mask reaches, so the small instance ranks higher and wins.
    logits = scene(20, 20)
    logits[CAR, 2:18, 2:18] = 3.0
    inputs = head_inputs(logits, [[2, 2, 18, 18], [6, 6, 14, 14]], [0.9, 0.5], [CAR, CAR])
    module = SpatialRankingModule(2, kernel=3)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.left[0].weight[0, 0, :, 0] = 1.0
        module.left[1].weight[0, 0, 0, :] = 1.0
    head = PanopticHead(IS_THING, PanopticHeadConfig(policy='spatial_ranking',
                                                     stuff_area_fraction=0), learned=module)
    # The ranking scores by hand: the mean over each mask of softmax([3x3 sum, 0, 0])[car].
    union = torch.zeros(20, 20)
    union[2:18, 2:18] = 1.0
    box_sum = torch.nn.functional.conv2d(union[None, None], torch.ones(1, 1, 3, 3),
                                         padding=1)[0, 0]
    p_car = torch.exp(box_sum) / (torch.exp(box_sum) + 2)
    expected = [p_car[2:18, 2:18].mean(), p_car[6:14, 6:14].mean()]
    policy_inputs = dict(zip(('sem_logits', 'center_offsets', 'boxes', 'scores', 'classes',
                              'valid'), inputs))
    from panoptic_ros.core.head import reference
    sem_class = policy_inputs['sem_logits'].argmax(0)
    x = torch.arange(20) + 0.5
    inside_x, inside_y = reference.box_membership(policy_inputs['boxes'],
                                                  policy_inputs['valid'], x, x)
    scores = reference.spatial_ranking_scores(module, sem_class, policy_inputs['classes'],
                                              head.thing_channels, inside_x, inside_y)
    torch.testing.assert_close(scores[:2], torch.stack(expected))
    assert scores[1] > scores[0]
    for form in FORMS:
        head.form = form
        head._assign = getattr(head.policy, form)
        out = head(*inputs)
        assert (out.panoptic[6:14, 6:14] == 3002).all(), form
        assert out.panoptic[3, 3] == 3001
    confident = make_head('highest_confidence', stuff_area_fraction=0)(*inputs)
    assert (confident.panoptic[6:14, 6:14] == 3001).all()


def test_a_refinement_net_with_fixed_weights_changes_a_mask_as_computed_by_hand():
    # One car box over the whole 8 x 8 image; the car pixels: a 2 x 2 block at rows 2-3,
    # columns 2-3, and an isolated pixel at (6, 6). The car network: the 3 x 3 sum of the mask,
    # minus 1.5, semantic channels ignored: a pixel is kept or added with >= 2 mask pixels in
    # its 3 x 3 window. By hand: the block stays, its 8 edge neighbours (each sees 2 block
    # pixels) join, its diagonal corners (1 each) and the isolated pixel (1) do not.
    logits = scene(8, 8)
    logits[CAR, 2:4, 2:4] = 3.0
    logits[CAR, 6, 6] = 3.0
    inputs = head_inputs(logits, [[0, 0, 8, 8]], [0.9], [CAR])
    module = MaskRefinement(2, 4, kernel=3)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.depthwise[0, 0] = 1.0
        module.pointwise[0, 0] = 1.0
        module.pointwise_bias[0] = -1.5
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 1:5] = True
    expected[1:5, 2:4] = True
    for form in FORMS:
        head = PanopticHead(IS_THING, PanopticHeadConfig(policy='refined',
                                                         stuff_area_fraction=0), form, module)
        out = head(*inputs)
        assert torch.equal(out.panoptic == 3001, expected), form
        assert out.panoptic[6, 6] == 0          # an unexplained car pixel: void (unknowns)
    # With the class's refinement switched off the box-cropped mask is used as it is.
    module.enabled[0] = False
    out = PanopticHead(IS_THING, PanopticHeadConfig(policy='refined', stuff_area_fraction=0),
                       learned=module)(*inputs)
    assert torch.equal(out.panoptic == 3001, torch.from_numpy(logits[CAR] == 3.0))


def test_refinement_fast_logits_equal_the_reference():
    torch.manual_seed(0)
    module = MaskRefinement(3, 5, kernel=5)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    masks = (torch.rand(7, 12, 15) < 0.4).float()
    probability = torch.softmax(torch.randn(5, 12, 15), 0)
    thing_index = torch.randint(0, 3, (7,))
    torch.testing.assert_close(module.fast_logits(masks, probability, thing_index),
                               module.reference_logits(masks, probability, thing_index))


def test_center_grouping_fast_form_equals_reference_form():
    rng = np.random.default_rng(7)
    for _ in range(60):
        case = random_case(rng, num_detections=int(rng.integers(1, 30)))
        h, w = case['sem_logits'].shape[1:]
        heatmap = torch.from_numpy(rng.random((1, h, w)).astype(np.float32)) * \
            float(rng.choice([0.05, 1.0]))     # sometimes no centre above the threshold
        t = {k: torch.as_tensor(v) for k, v in case.items() if k not in ('is_thing', 'learned')}
        outs = [PanopticHead(case['is_thing'], PanopticHeadConfig(
            policy='center_grouping', stuff_area_fraction=0.0), form)(
                t['sem_logits'], t['center_offsets'], t['boxes'], t['scores'], t['classes'],
                t['valid'], center_heatmap=heatmap) for form in FORMS]
        assert torch.equal(outs[0].panoptic, outs[1].panoptic)
        assert torch.equal(outs[0].box, outs[1].box)
        torch.testing.assert_close(outs[0].score, outs[1].score)


class DeviceMixing(TorchDispatchMode):
    """Records every op that mixes a CPU tensor into an op on another device (a copy to the
    device, which a CUDA graph cannot capture)."""

    def __init__(self):
        super().__init__()
        self.mixed = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        if 'cpu' in devices and len(devices) > 1:
            self.mixed.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('policy', POLICIES)
def test_reference_form_has_static_shapes_and_no_host_reads(policy):
    """The reference form runs on the meta device (no data: any host read, .item(), nonzero
    or bincount's size from the data fails there) and mixes no CPU tensor into its ops: what
    CUDA-graph capture needs, checked without a GPU (test_cuda.py captures it on one)."""
    rng = np.random.default_rng(11)
    case = random_case(rng, num_detections=12)
    h, w = case['sem_logits'].shape[1:]
    learned = REGISTRY[policy].learned
    head = PanopticHead(case['is_thing'], PanopticHeadConfig(policy=policy, min_kept_fraction=0.3),
                        'reference', case['learned'][learned] if learned else None).to('meta')
    t = {k: torch.as_tensor(v).to('meta') for k, v in case.items()
         if k not in ('is_thing', 'learned')}
    maps = {name: torch.rand(1, h, w).to('meta') for name in ('center_heatmap',
                                                              'borderness_map')}
    spy = DeviceMixing()
    with torch.inference_mode(), spy:
        out = head(t['sem_logits'], t['center_offsets'], t['boxes'], t['scores'], t['classes'],
                   t['valid'], image_size=(3 * h, 2 * w), **maps)
    assert out.panoptic.shape == (3 * h, 2 * w) and out.panoptic.device.type == 'meta'
    assert not spy.mixed, spy.mixed
