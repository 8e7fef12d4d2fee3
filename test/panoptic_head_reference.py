"""Plain reference implementation of the panoptic head, for tests only.

Loops over pixels and detections in numpy (float32 arithmetic, the same expressions as the
head), written from the rules in the docstring of panoptic_ros/core/head/__init__.py rather
than from its tensor code. Slow by design; never imported by the package.
"""

import numpy as np

NEG_INF = np.float32(-np.inf)


class BorderlineCase(ValueError):
    """float32 and float64 may decide this case differently (a test skips it)."""


def reference_head(sem_logits, center_offsets, boxes, scores, classes, valid, is_thing, *,
                   policy, label_divisor=1000, unknowns=True, stuff_area_fraction=0.0,
                   min_kept_fraction=0.0, paste_overlap=0.3, borderness_map=None,
                   learned=None):
    """Returns (panoptic int32 [h, w], {segment_id: dict(category_id, is_thing, area, box,
    score)}, det_segment_id list[N]) at the logits' resolution (image size = logits size).
    borderness_map [h, w] (closest_borderness); learned: the policy's torch module
    (spatial_ranking, refined: only its convolutions are run through torch)."""
    sem_logits = np.asarray(sem_logits, np.float32)
    offsets = np.asarray(center_offsets, np.float32)
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    num_classes, h, w = sem_logits.shape
    stuff = [k for k in range(num_classes) if not is_thing[k]]
    things = [k for k in range(num_classes) if is_thing[k]]
    num_stuff, n = len(stuff), len(boxes)

    def inside(i, r, c):
        x = (np.float32(c) + np.float32(0.5)) * np.float32(1.0)
        y = (np.float32(r) + np.float32(0.5)) * np.float32(1.0)
        return bool(valid[i]) and boxes[i, 0] <= x <= boxes[i, 2] and \
            boxes[i, 1] <= y <= boxes[i, 3]

    def first_argmax(values):
        best = 0
        for k in range(1, len(values)):
            if values[k] > values[best]:
                best = k
        return best

    sem_class = np.zeros((h, w), np.int64)
    best_stuff = np.zeros((h, w), np.int64)
    for r in range(h):
        for c in range(w):
            best_stuff[r, c] = first_argmax([sem_logits[k, r, c] for k in stuff])
            best_thing = things[first_argmax([sem_logits[k, r, c] for k in things])]
            # One tie rule: a thing wins an exact tie with stuff.
            stuff_class = stuff[best_stuff[r, c]]
            thing_wins = sem_logits[best_thing, r, c] >= sem_logits[stuff_class, r, c]
            sem_class[r, c] = best_thing if thing_wins else stuff_class
    own = np.zeros((n, h, w), bool)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                own[i, r, c] = inside(i, r, c) and sem_class[r, c] == classes[i]

    det = -np.ones((h, w), np.int64)  # winning detection per pixel, -1 none
    ranking = None
    if policy == 'spatial_ranking':
        ranking = spatial_ranking(own, classes, things, learned)
    if policy in ('paste', 'closest_borderness'):
        order = sorted(range(n), key=lambda i: (-(scores[i] if valid[i] else -np.inf), i))
        taken = np.zeros((h, w), bool)
        kept = []
        for i in order:
            area = int(own[i].sum())
            inter = int((own[i] & taken).sum())
            if area > 0 and np.float32(inter) <= np.float32(paste_overlap) * np.float32(area):
                new = own[i] & ~taken
                det[new] = i
                taken |= new
                kept.append(i)
        if policy == 'closest_borderness':   # kept same-class masks sharing a pixel
            for r in range(h):
                for c in range(w):
                    holders = [i for i in kept if own[i, r, c]]
                    if len(holders) >= 2:
                        distance = [abs(geometric_borderness(boxes[i], r, c) -
                                        np.float32(borderness_map[r, c])) for i in holders]
                        det[r, c] = holders[int(np.argmin(distance))]   # earliest on a tie
    elif policy == 'refined':
        in_box = np.array([[[inside(i, r, c) for c in range(w)] for r in range(h)]
                           for i in range(n)], bool).reshape(n, h, w)
        refined, logits = refined_masks(own, in_box, sem_logits, classes, things, learned)
        if np.abs(logits).min() < 1e-4:
            raise BorderlineCase('a refinement logit within 1e-4 of the 0.5 threshold')
        for r in range(h):
            for c in range(w):
                holders = [i for i in range(n) if valid[i] and refined[i, r, c]]
                if holders:
                    det[r, c] = max(holders, key=lambda i: (scores[i], -i))
    else:
        for r in range(h):
            for c in range(w):
                best, cands = NEG_INF, []
                for i in range(n):
                    if not inside(i, r, c):
                        continue
                    value = sem_logits[classes[i], r, c]
                    if value > best:
                        best, cands = value, [i]
                    elif value == best:
                        cands.append(i)
                stuff_best = max(sem_logits[k, r, c] for k in stuff)
                if not cands or not best >= stuff_best:   # ties: the detection
                    continue
                det[r, c] = max(cands, key=lambda i: (key(policy, i, r, c, boxes, scores,
                                                          offsets, ranking), -i))

    slots = np.where(det >= 0, det + num_stuff, best_stuff)
    if unknowns:
        for r in range(h):
            for c in range(w):
                if det[r, c] < 0 and is_thing[sem_class[r, c]]:
                    slots[r, c] = -1
    for i in range(n):
        won = int((slots == num_stuff + i).sum())
        if np.float32(won) < np.float32(min_kept_fraction) * np.float32(own[i].sum()):
            slots[slots == num_stuff + i] = -1
    if stuff_area_fraction > 0:
        for s in range(num_stuff):
            if np.float32((slots == s).sum()) < np.float32(stuff_area_fraction * h * w):
                slots[slots == s] = -1

    # Segment ids.
    probs = np.exp(sem_logits.astype(np.float64) - sem_logits.max(0, keepdims=True))
    probs /= probs.sum(0, keepdims=True)
    panoptic = np.zeros((h, w), np.int32)
    segments, det_segment_id, next_instance = {}, [0] * n, 1
    for slot in range(num_stuff + n):
        pixels = slots == slot
        if not pixels.any():
            continue
        if slot < num_stuff:
            category, instance, thing = stuff[slot] + 1, 0, False
            score = float(probs[stuff[slot]][pixels].mean())
        else:
            i = slot - num_stuff
            category, instance, thing = int(classes[i]) + 1, next_instance, True
            next_instance += 1
            score = float(scores[i])
        segment_id = category * label_divisor + instance
        panoptic[pixels] = segment_id
        rows, cols = np.nonzero(pixels)
        segments[segment_id] = dict(category_id=category, is_thing=thing,
                                    area=int(pixels.sum()), score=score,
                                    box=[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        if thing:
            det_segment_id[slot - num_stuff] = segment_id
    return panoptic, segments, det_segment_id


def geometric_borderness(box, r, c):
    """LPSNet's border-ness of pixel centre (r, c) in a box (float32)."""
    x = np.float32(c) + np.float32(0.5)
    y = np.float32(r) + np.float32(0.5)

    def ratio(a, b):
        a, b = max(a, np.float32(0)), max(b, np.float32(0))
        return np.float32(min(a, b) / max(max(a, b), np.float32(1e-6)))
    return np.sqrt(ratio(y - box[1], box[3] - y) * ratio(x - box[0], box[2] - x))


def spatial_ranking(own, classes, things, module):
    """OANet ranking score per detection: the instance map by loops, the module's
    convolutions, the softmax, then the mean over each mask of its class's probability."""
    import torch
    n, h, w = own.shape
    instance_map = np.zeros((len(things), h, w), np.float32)
    for i in range(n):
        instance_map[things.index(classes[i])][own[i]] = 1.0
    with torch.no_grad():
        logits = module(torch.from_numpy(instance_map)[None])[0].numpy().astype(np.float64)
    probability = np.exp(logits - logits.max(0))
    probability /= probability.sum(0)
    return [float(probability[things.index(classes[i])][own[i]].mean()) if own[i].any()
            else 0.0 for i in range(n)]


def refined_masks(own, in_box, sem_logits, classes, things, module):
    """The INRIA refinement by loops (float64): per detection its class's channel-wise
    k x k convolution of [mask, probabilities] and the 1 x 1 reduction; logit > 0 within k // 2
    pixels of the box where the class is enabled, the box-cropped mask elsewhere.
    Returns (bool [N, h, w], the logits)."""
    n, h, w = own.shape
    p = np.exp(sem_logits.astype(np.float64) - sem_logits.max(0))
    p /= p.sum(0)
    dw = module.depthwise.detach().double().numpy()
    dwb = module.depthwise_bias.detach().double().numpy()
    pw = module.pointwise.detach().double().numpy()
    pwb = module.pointwise_bias.detach().double().numpy()
    k = module.kernel
    logits = np.zeros((n, h, w))
    refined = own.copy()
    for i in range(n):
        t = things.index(classes[i])
        stacked = np.concatenate([own[i][None].astype(np.float64), p])
        padded = np.pad(stacked, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        for r in range(h):
            for c in range(w):
                window = padded[:, r:r + k, c:c + k]
                hidden = (window * dw[t]).sum((1, 2)) + dwb[t]
                logits[i, r, c] = (hidden * pw[t]).sum() + pwb[t]
        if module.enabled[t]:
            for r in range(h):
                for c in range(w):
                    near = in_box[i, max(r - k // 2, 0):r + k // 2 + 1,
                                  max(c - k // 2, 0):c + k // 2 + 1].any()
                    refined[i, r, c] = logits[i, r, c] > 0 and near
    return refined, logits


def key(policy, i, r, c, boxes, scores, offsets, ranking=None):
    """Preference among same-logit detections at pixel (r, c); higher wins."""
    if policy == 'highest_confidence':
        return scores[i]
    if policy == 'spatial_ranking':
        return ranking[i]
    if policy == 'smallest_first':
        return -((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
    x = (np.float32(c) + np.float32(0.5)) * np.float32(1.0)
    y = (np.float32(r) + np.float32(0.5)) * np.float32(1.0)
    cx = (boxes[i, 0] + boxes[i, 2]) * np.float32(0.5)
    cy = (boxes[i, 1] + boxes[i, 3]) * np.float32(0.5)
    dx = (x + offsets[0, r, c]) - cx
    dy = (y + offsets[1, r, c]) - cy
    return -(dx * dx + dy * dy)
