"""Panoptic head, reference form: plain torch on any device, as Weber et al. describe it.

Static shapes, no host synchronisation: every function here can run inside a CUDA graph.
The fast CPU forms in fast_cpu.py are tested equal to these.
"""

import functools

import torch

NEG_INF = float('-inf')


def counts(index, size, weights=None):
    """torch.bincount(index, weights, minlength=size) for indices in [0, size), with the
    static size: on CUDA bincount reads the largest index back to the host, which a CUDA
    graph cannot capture, so other devices than the CPU count with index_add_.

    Args: index int64 [P]; weights [P] or None. Returns: [size], int64 or weights' dtype.
    """
    if index.device.type == 'cpu':
        return torch.bincount(index, weights, minlength=size)
    if weights is None:
        weights = torch.ones_like(index)
    return weights.new_zeros(size).index_add_(0, index, weights)


# Geometry depends only on the grid and image sizes: computed once per camera, then cached
# (read-only tensors).
@functools.lru_cache(maxsize=16)
def pixel_centres(h, w, image_size, device):
    """Centres of the (h, w) grid's pixels in input-image pixels: (x [w], y [h]), float32."""
    out_h, out_w = image_size
    x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (out_w / w)
    y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (out_h / h)
    return x, y


def box_membership(boxes, valid, x, y):
    """Which pixel columns and rows lie in each box (boxes are separable).

    Args: boxes float [N, 4] (x1, y1, x2, y2), valid bool [N], x [w], y [h] pixel centres.
    Returns: inside_x bool [w, N] (padding never inside), inside_y bool [h, N].
    """
    boxes = boxes.float()
    inside_x = (x[:, None] >= boxes[:, 0]) & (x[:, None] <= boxes[:, 2]) & valid
    inside_y = (y[:, None] >= boxes[:, 1]) & (y[:, None] <= boxes[:, 3])
    return inside_x, inside_y


def semantic_argmax(sem_logits, stuff_channels, thing_channels, first_max=None):
    """The semantic class of every pixel under the head's one tie rule.

    Args: sem_logits float [C, h, w]; stuff_channels [S], thing_channels [T] int64;
    first_max: (values [K, ...]) -> (max, first index reaching it), default torch.max.
    Returns: sem_class int64 [h, w] (a thing channel wins an exact tie with a stuff channel;
    within stuff or within things the lower channel wins), best_stuff_value float [h, w],
    best_stuff int64 [h, w] (index into stuff_channels).
    """
    first_max = first_max or (lambda values: torch.max(values, 0))
    # Thing channels first: the first maximum is then a thing on an exact thing/stuff tie.
    things_first = torch.cat([thing_channels, stuff_channels])
    reordered = sem_logits.index_select(0, things_first)
    _, first = first_max(reordered)
    best_stuff_value, best_stuff = first_max(reordered[thing_channels.shape[0]:])
    return things_first.take(first), best_stuff_value, best_stuff


def instance_aware_logits(sem_logits, stuff_channels, classes, inside_x, inside_y):
    """Weber et al.'s instance-aware logits: the stuff slices, then per detection its class
    slice inside its box and -inf outside.

    Args: sem_logits float [C, h, w]; stuff_channels int64 [S]; classes int64 [N];
    inside_x bool [w, N], inside_y bool [h, N].
    Returns: float [S + N, h, w].
    """
    inside = inside_y.T[:, :, None] & inside_x.T[:, None, :]                     # [N, h, w]
    detections = torch.where(inside, sem_logits.index_select(0, classes), NEG_INF)
    return torch.cat([sem_logits.index_select(0, stuff_channels), detections])


def argmax_with_tie_key(logits, num_stuff, det_key):
    """The argmax over instance-aware logits, ties broken by the head's rule.

    Among the slots reaching the pixel's maximum a detection beats stuff; among detections
    the largest ``det_key`` wins, then the lowest index. (Stuff ties need no rule here: the
    stuff slot of a pixel is its best stuff channel, semantic_argmax's.)

    Args: logits float [S + N, h, w]; det_key float [N] or [N, h, w], finite.
    Returns: det_slot int64 [h, w] (detection index where is_det), is_det bool [h, w].
    """
    tied = logits[num_stuff:] == logits.amax(0)                                   # [N, h, w]
    key = torch.where(tied, det_key.reshape(det_key.shape + (1,) * (3 - det_key.dim()))
                      .expand_as(tied), NEG_INF)
    return key.argmax(0), tied.any(0)


def center_distance_key(boxes, center_offsets, x, y):
    """Minus the squared distance from (pixel + predicted offset) to each box centre.

    Args: boxes float [N, 4]; center_offsets float [2, h, w] (dx, dy); x [w], y [h].
    Returns: float [N, h, w].
    """
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    px = x[None, :] + center_offsets[0].float()                                  # [h, w]
    py = y[:, None] + center_offsets[1].float()
    dx = px - cx[:, None, None]
    dy = py - cy[:, None, None]
    return -(dx * dx + dy * dy)


def paste(sem_class, classes, scores, valid, inside_x, inside_y, overlap):
    """LPSNet's paste by confidence over the fixed N detection slots.

    A box's mask is the pixels in it whose semantic class is its class; in order of
    decreasing score, a mask overlapping the pixels already taken by more than ``overlap``
    of its area is discarded, otherwise its untaken pixels are kept.

    Args: sem_class int64 [h, w]; classes int64 [N]; scores float [N]; valid bool [N];
    inside_x bool [w, N], inside_y bool [h, N]; overlap float in [0, 1].
    Returns: det_slot int64 [h, w], is_det bool [h, w].
    """
    det_slot, taken, _, _ = paste_with_masks(sem_class, classes, scores, valid, inside_x,
                                             inside_y, overlap)
    return det_slot, taken


def paste_with_masks(sem_class, classes, scores, valid, inside_x, inside_y, overlap):
    """``paste``, also returning the box masks bool [N, h, w] and which were kept, bool [N]."""
    h, w = sem_class.shape
    n = classes.shape[0]
    masks = (inside_y.T[:, :, None] & inside_x.T[:, None, :]
             & (sem_class == classes[:, None, None])).reshape(n, h * w)        # [N, P]
    areas = masks.sum(1).float()
    order = paste_order(scores, valid)
    # in paste order by a gather (a 0-d tensor index, masks[slot], would read it to the host)
    masks_in_order, areas_in_order = masks[order], areas[order]
    taken = torch.zeros(h * w, dtype=torch.bool, device=sem_class.device)
    det_slot = torch.zeros(h * w, dtype=torch.long, device=sem_class.device)
    kept = torch.zeros(n, dtype=torch.bool, device=sem_class.device)
    for rank in range(n):  # fixed trip count (N slots): no host synchronisation
        slot, mask, area = order[rank], masks_in_order[rank], areas_in_order[rank]
        inter = (mask & taken).sum().float()
        keep = (area > 0) & (inter <= overlap * area)
        new = mask & ~taken & keep
        det_slot = torch.where(new, slot, det_slot)
        taken = taken | new
        kept = kept.index_put((slot[None],), keep[None])
    return det_slot.view(h, w), taken.view(h, w), masks.view(n, h, w), kept


def paste_order(scores, valid):
    """Detection slots by decreasing score, padding last (stable), int64 [N]."""
    return torch.argsort(torch.where(valid, scores.float(), NEG_INF), descending=True,
                         stable=True)


def borderness_factors(boxes, x, y):
    """The separable factors of LPSNet's geometric border-ness of pixel centres in boxes:
    border-ness = sqrt(bx[n, column] * by[n, row]) with bx = min(l, r) / max(l, r) and
    by = min(t, b) / max(t, b), l, r, t, b the distances to the box's sides (0 outside).

    Args: boxes float [N, 4]; x [w], y [h] pixel centres. Returns: bx [N, w], by [N, h].
    """
    def ratio(a, b):
        a, b = a.clamp(min=0), b.clamp(min=0)
        return torch.minimum(a, b) / torch.maximum(a, b).clamp(min=1e-6)
    bx = ratio(x[None, :] - boxes[:, 0:1], boxes[:, 2:3] - x[None, :])
    by = ratio(y[None, :] - boxes[:, 1:2], boxes[:, 3:4] - y[None, :])
    return bx, by


def closest_borderness(sem_class, boxes, classes, scores, valid, inside_x, inside_y, overlap,
                       borderness_map, x, y):
    """LPSNet's paste by confidence with closest border-ness for same-class overlaps
    (*LPSNet*, section 3.4): masks are kept or discarded as ``paste`` does; a pixel in the
    masks of several kept boxes goes to the box whose geometric border-ness at the pixel is
    closest to the predicted one (an exact tie: the earlier box in paste order).

    Args: as ``paste``, and boxes float [N, 4], borderness_map float [h, w] (predicted
    border-ness in [0, 1]), x [w], y [h] pixel centres.
    Returns: det_slot int64 [h, w], is_det bool [h, w].
    """
    det_slot, taken, masks, kept = paste_with_masks(sem_class, classes, scores, valid,
                                                    inside_x, inside_y, overlap)
    claims = masks & kept[:, None, None]                                           # [N, h, w]
    contested = claims.sum(0) >= 2
    bx, by = borderness_factors(boxes, x, y)
    geometric = torch.sqrt(by[:, :, None] * bx[:, None, :])                      # [N, h, w]
    distance = torch.where(claims, (geometric - borderness_map.float()).abs(), float('inf'))
    closest = distance == distance.amin(0)
    rank = torch.empty_like(kept, dtype=torch.long).scatter_(
        0, paste_order(scores, valid), torch.arange(kept.shape[0], device=kept.device))
    winner = torch.where(closest, -rank[:, None, None], torch.iinfo(torch.long).min).argmax(0)
    return torch.where(contested, winner, det_slot), taken


def own_mask_area(sem_class, classes, inside_x, inside_y):
    """Pixels in each detection's box whose semantic class is its class, float [N]."""
    inside = inside_y.T[:, :, None] & inside_x.T[:, None, :]                     # [N, h, w]
    return (inside & (sem_class == classes[:, None, None])).sum((1, 2)).float()


def heatmap_peaks(heatmap, kernel, threshold):
    """Keypoint NMS (*Panoptic-DeepLab*): bool [h, w], the cells of heatmap float [h, w] that
    equal the max-pool of ``kernel`` cells around them and exceed ``threshold`` (every cell of
    a flat top counts)."""
    pooled = torch.nn.functional.max_pool2d(heatmap[None, None].float(), kernel, stride=1,
                                            padding=kernel // 2)[0, 0]
    return (heatmap == pooled) & (heatmap > threshold)


def center_grouping(heatmap, center_offsets, sem_logits, sem_class, is_thing, x, y, kernel,
                    threshold, slots, nearest_centre=None):
    """Panoptic-DeepLab's box-free grouping (*Panoptic-DeepLab*, section 3, inference).

    Keypoint NMS keeps the heatmap's local maxima (max-pool of ``kernel`` cells) above
    ``threshold``, the ``slots`` highest as instance centres (a fixed top-k: static shapes);
    every thing pixel (semantic argmax a thing class) moves by its predicted offset and joins
    the nearest centre; an instance's class is the majority of its pixels' semantic classes
    (the lower channel on a tie), its score the heatmap peak times the mean probability of that
    class over its pixels; its box the extent of its pixels.

    Args: heatmap float [h, w]; center_offsets float [2, h, w]; sem_logits float [C, h, w];
    sem_class int64 [h, w]; is_thing bool [C]; x [w], y [h] pixel centres (input pixels);
    kernel odd int; threshold float; slots int (N); nearest_centre: a faster function of
    (px, py, cx, cy, is_centre, member) giving each pixel's nearest centre, the same values
    where member is set (default ``nearest_centres``).
    Returns: det_slot int64 [h, w], is_det bool [h, w], boxes float [N, 4], scores [N],
    classes int64 [N] (a thing channel), valid bool [N].
    """
    h, w = heatmap.shape
    num_classes = sem_logits.shape[0]
    device = heatmap.device
    peaks = torch.where(heatmap_peaks(heatmap, kernel, threshold), heatmap.float(), NEG_INF)
    k = min(slots, h * w)                               # shapes only: no host synchronisation
    peak_value, peak_index = torch.topk(peaks.flatten(), k)
    if k < slots:
        peak_value = torch.cat([peak_value, peak_value.new_full((slots - k,), NEG_INF)])
        peak_index = torch.cat([peak_index, peak_index.new_zeros(slots - k)])
    is_centre = peak_value > NEG_INF                                               # [N]
    cx, cy = x.take(peak_index % w), y.take(torch.div(peak_index, w, rounding_mode='floor'))
    px = x[None, :] + center_offsets[0].float()                                  # [h, w]
    py = y[:, None] + center_offsets[1].float()
    member = (is_thing.take(sem_class) & is_centre.any()).flatten()               # [h w]
    nearest = (nearest_centre or nearest_centres)(px, py, cx, cy, is_centre, member)
    index = nearest.flatten()
    # Majority vote of the semantic classes inside each instance.
    votes = torch.zeros(slots * num_classes, device=device).index_add_(
        0, index * num_classes + sem_class.flatten(), member.float()).view(slots, num_classes)
    count = votes.sum(1)
    classes = votes.argmax(1)
    valid = is_centre & (count > 0)
    is_det = member.view(h, w) & valid.take(nearest)
    # Score: peak x the mean probability of the instance's class over its pixels.
    probability = torch.softmax(sem_logits.float(), 0).flatten(1)               # [C, h w]
    own = probability.gather(0, classes.take(index)[None])[0] * member
    mean = torch.zeros(slots, device=device).index_add_(0, index, own) / count.clamp(min=1)
    scores = torch.where(valid, peak_value.clamp(min=0) * mean, 0.0)
    # Boxes: the extent of each instance's pixels (pixel edges, input pixels).
    half_x, half_y = x[0], y[0]                          # half a pixel: centres sit at 0.5 px
    gx = x.expand(h, w).flatten()
    gy = y[:, None].expand(h, w).flatten()
    inf = torch.full((slots,), float('inf'), device=device)
    masked = is_det.flatten()
    x1 = inf.scatter_reduce(0, index, torch.where(masked, gx, float('inf')), 'amin')
    y1 = inf.scatter_reduce(0, index, torch.where(masked, gy, float('inf')), 'amin')
    x2 = (-inf).scatter_reduce(0, index, torch.where(masked, gx, float('-inf')), 'amax')
    y2 = (-inf).scatter_reduce(0, index, torch.where(masked, gy, float('-inf')), 'amax')
    boxes = torch.stack([x1 - half_x, y1 - half_y, x2 + half_x, y2 + half_y], 1)
    boxes = torch.where(valid[:, None], boxes, 0.0)
    return nearest.view(h, w), is_det, boxes, scores, classes, valid


def thing_index(thing_channels, classes):
    """Each detection's position among the thing channels, int64 [N] (its thing class's
    plane or network; padding slots get a valid index, their masks are empty)."""
    return torch.searchsorted(thing_channels, classes).clamp(max=thing_channels.shape[0] - 1)


def box_ranges(inside_x, inside_y):
    """Each box's grid rows [r0, r1) and columns [c0, c1) (empty for padding), int64 [N] each:
    pixel centres increase along each axis, so a box covers a contiguous range."""
    rows, cols = inside_y.sum(0), inside_x.sum(0)
    r0 = torch.where(rows > 0, inside_y.int().argmax(0), 0)
    c0 = torch.where(cols > 0, inside_x.int().argmax(0), 0)
    return r0, r0 + rows, c0, c0 + cols


def class_mask_counts(sem_class, classes, thing_channels, inside_x, inside_y):
    """How many box masks of each thing class cover each pixel (a box's mask: its pixels
    whose semantic class is its class); the boxes by a 2-D difference array, without
    [N, h, w] (static shapes).

    Args: sem_class int64 [h, w]; classes int64 [N]; thing_channels int64 [T];
    inside_x bool [w, N], inside_y bool [h, N]. Returns: float [T, h, w].
    """
    (h, w), t = sem_class.shape, thing_channels.shape[0]
    r0, r1, c0, c1 = box_ranges(inside_x, inside_y)
    of_class = thing_index(thing_channels, classes)
    real = ((r1 > r0) & (c1 > c0) & (thing_channels.take(of_class) == classes)).float()
    corners = torch.zeros(t, h + 1, w + 1, device=sem_class.device)
    for rows, cols, sign in ((r0, c0, 1.0), (r0, c1, -1.0), (r1, c0, -1.0), (r1, c1, 1.0)):
        corners.index_put_((of_class, rows, cols), sign * real, accumulate=True)
    boxes = corners.cumsum(1).cumsum(2)[:, :h, :w]
    return boxes * (sem_class[None] == thing_channels[:, None, None])


def mask_means(values, sem_class, classes, thing_channels, inside_x, inside_y):
    """The mean of values[t] over each detection's box mask (t its thing class), float [N]
    (0 for an empty mask), by integral images (float64) of values x own-class pixels.

    Args: values float [T, h, w]; the rest as class_mask_counts.
    """
    own = (sem_class[None] == thing_channels[:, None, None]).double()           # [T, h, w]
    both = torch.stack([values.double() * own, own])                          # [2, T, h, w]
    integral = torch.nn.functional.pad(both.cumsum(2).cumsum(3), (1, 0, 1, 0))
    r0, r1, c0, c1 = box_ranges(inside_x, inside_y)
    of_class = thing_index(thing_channels, classes)

    def at(rows, cols):
        return integral[:, of_class, rows, cols]                                  # [2, N]
    total, area = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
    empty = (r1 <= r0) | (c1 <= c0)
    return torch.where(empty, 0.0, total / area.clamp(min=1)).float()


def spatial_ranking_scores(module, sem_class, classes, thing_channels, inside_x, inside_y):
    """OANet's instance ranking scores (*OANet*, section 3.2, equation 3): the instance map
    (1 where a box mask of the class lies) through the spatial ranking module, softmax over
    its channels, each instance's score the mean over its mask of its class's probability.

    Args: module: SpatialRankingModule; the rest as class_mask_counts.
    Returns: float [N].
    """
    instance_map = (class_mask_counts(sem_class, classes, thing_channels, inside_x,
                                      inside_y) > 0).float()
    probability = torch.softmax(module(instance_map[None])[0], 0)[:-1]       # [T, h, w]
    return mask_means(probability, sem_class, classes, thing_channels, inside_x, inside_y)


def refined_assignment(refined, scores, valid):
    """The refined masks replace the box-cropped ones; a pixel goes to the highest-scoring
    detection whose mask holds it (then the lower index).

    Args: refined bool [N, h, w] (the masks after refinement); scores float [N]; valid bool
    [N]. Returns: det_slot int64 [h, w], is_det bool [h, w].
    """
    held = refined & valid[:, None, None]
    key = torch.where(held, scores.float()[:, None, None], NEG_INF)
    return key.argmax(0), held.any(0)


def nearest_centres(px, py, cx, cy, is_centre, member):
    """The nearest centre (the lower slot on a tie) of every pixel after its offset.

    Args: px, py float [h, w] (pixel + offset); cx, cy [N]; is_centre bool [N]; member bool
    [h w] (unused here: every pixel is computed). Returns: int64 [h, w].
    """
    distance = (px - cx[:, None, None]) ** 2 + (py - cy[:, None, None]) ** 2    # [N, h, w]
    return torch.where(is_centre[:, None, None], distance, float('inf')).argmin(0)
