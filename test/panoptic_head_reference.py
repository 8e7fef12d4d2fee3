"""Plain reference implementation of the panoptic head, for tests only.

Loops over pixels and detections in numpy (float32 arithmetic, the same expressions as the
head), written from the rules in the docstring of panoptic_ros/core/head/__init__.py rather
than from its tensor code. Slow by design; never imported by the package.
"""

import numpy as np

NEG_INF = np.float32(-np.inf)


def reference_head(sem_logits, center_offsets, boxes, scores, classes, valid, is_thing, *,
                   policy, label_divisor=1000, unknowns=True, stuff_area_fraction=0.0,
                   min_kept_fraction=0.0, paste_overlap=0.3):
    """Returns (panoptic int32 [h, w], {segment_id: dict(category_id, is_thing, area, box,
    score)}, det_segment_id list[N]) at the logits' resolution (image size = logits size)."""
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
    if policy == 'paste':
        order = sorted(range(n), key=lambda i: (-(scores[i] if valid[i] else -np.inf), i))
        taken = np.zeros((h, w), bool)
        for i in order:
            area = int(own[i].sum())
            inter = int((own[i] & taken).sum())
            if area > 0 and np.float32(inter) <= np.float32(paste_overlap) * np.float32(area):
                new = own[i] & ~taken
                det[new] = i
                taken |= new
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
                                                          offsets), -i))

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


def key(policy, i, r, c, boxes, scores, offsets):
    """Preference among same-logit detections at pixel (r, c); higher wins."""
    if policy == 'highest_confidence':
        return scores[i]
    if policy == 'smallest_first':
        return -((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
    x = (np.float32(c) + np.float32(0.5)) * np.float32(1.0)
    y = (np.float32(r) + np.float32(0.5)) * np.float32(1.0)
    cx = (boxes[i, 0] + boxes[i, 2]) * np.float32(0.5)
    cy = (boxes[i, 1] + boxes[i, 3]) * np.float32(0.5)
    dx = (x + offsets[0, r, c]) - cx
    dy = (y + offsets[1, r, c]) - cy
    return -(dx * dx + dy * dy)
