"""Panoptic head, fast CPU form: the same results as reference.py, several times faster on
the CPU (tested equal).

Where the reference form builds [S + N, h, w] instance-aware logits, these use bit sets over
the detections (boxes are separable), an index-free argmax, loop bounds read on the host and a
numpy paste over each box's window. Host reads cost nothing on the CPU but make these forms
unsuitable for CUDA graphs; the head uses them for CPU tensors only.
"""

import numpy as np
import torch


def first_max(values):
    """Maximum over dim 0 and the first index that reaches it, for finite values [K, ...]:
    the same result as torch.max(values, 0) (ties to the lowest index), several times faster
    on the CPU (see _first_zero)."""
    best = values.amax(0)
    return best, _first_zero(values - best)


def _first_zero(shifted):
    """First index k along dim 0 where shifted[k] == 0, for shifted = values - max(values, 0)
    (finite values: <= 0, and 0 exactly at the maxima). Overwrites `shifted`.

    An index-returning reduction over a short dim 0 (or a short last dim) is an order of
    magnitude slower on the CPU than a max-reduction and elementwise arithmetic: sign + 1
    marks the maxima with 1 and the rest with 0; weighting index k by K - k, the largest
    weight marks the first maximum.
    """
    k = shifted.shape[0]
    weight = torch.arange(k, 0, -1, device=shifted.device, dtype=shifted.dtype)
    hits = shifted.sign_().add_(1).mul_(weight.view((k,) + (1,) * (shifted.dim() - 1)))
    return k - hits.amax(0).long()


# Instance-aware logit of a detection outside its box in the bit-set forms: logits must be
# finite and above -1e29 (network outputs are); x + _UNCOVERED rounds to about _UNCOVERED.
_UNCOVERED = -1e30
# Detection bit sets: 24 detections per int32 word, so that a float32 sum of distinct bits of
# one word (a product of 0/1 matrices) is exact, and so is a power of two's float32 exponent.
_BITS_PER_WORD = 24
# Pixels per block of center_grouping's nearest-centre search ([block, centres] float32
# distances: 400 kB at 100 centres, inside a core's L2 cache).
NEAREST_CHUNK = 1024


def _candidate_bits(sem_chw, classes, inside_x, inside_y, thing_channels, rank_of,
                    want_count=False):
    """The detections with the maximal instance-aware logit at every pixel, as bit sets.

    Boxes are separable, so the detections covering pixel (r, c) are the bit set
    rowbits[r] & colbits[c] (bit k in word k // 24 for the detection of rank k), and the
    number of covering detections of each thing class is a product of the row and column
    indicators. The candidates are the covering detections of the thing classes whose logit
    is maximal. No [pixels x detections] array is built.

    Returns (best_det float [h, w], about _UNCOVERED (below every logit) where no box covers;
    candidates int32 [W, h * w]; count float [h * w], the number of candidates, or None
    unless want_count).
    """
    n = classes.shape[0]
    device = sem_chw.device
    words = (n + _BITS_PER_WORD - 1) // _BITS_PER_WORD
    word = rank_of // _BITS_PER_WORD
    bit = torch.bitwise_left_shift(torch.ones_like(rank_of), rank_of % _BITS_PER_WORD).int()

    def pack(member):  # [L, N] bool -> [words, L] int32 bit sets (distinct bits: sum = or)
        values = torch.where(member, bit, 0).T
        return torch.zeros(words, member.shape[0], dtype=torch.int32,
                           device=device).index_add_(0, word, values)

    of_class = (classes[:, None] == thing_channels[None, :]).float()               # [N, T]
    # Covering detections per thing class: sum_n Y[r, n] X[c, n] [class n = t].
    counts = inside_y.float()[None] @ (inside_x.T.float()[None] * of_class.T[:, :, None])
    # Float arithmetic instead of comparisons and where (several times faster on the CPU):
    # covered 1 / 0; a class's logit where it covers, _UNCOVERED below every logit elsewhere.
    covered = counts.clamp(max=1).flatten(1)                                      # [T, P]
    value = (covered - 1).mul_(-_UNCOVERED).add_(sem_chw.index_select(0, thing_channels)
                                                 .flatten(1))
    best_det = value.amax(0)
    # Tied classes: value == best (sign of value - best is 0 there, -1 below), covering.
    tied = (value - best_det).sign_().add_(1).mul_(covered)                       # [T, P]
    best_det = best_det.view(counts.shape[1:])
    # Union of the tied classes' detection bits (disjoint per class: a sum), & covering; a
    # float32 product of 0/1 matrices is exact on the CPU (sums below 2**24). Word-major
    # [W, P]: reductions over words run over dim 0.
    class_bits = pack(of_class.T > 0)                                             # [W, T]
    tied_bits = (class_bits.float() @ tied).int()                                 # [W, P]
    covering = pack(inside_y)[:, :, None] & pack(inside_x)[:, None, :]          # [W, h, w]
    count = (tied * counts.flatten(1)).sum(0) if want_count else None
    return best_det, covering.flatten(1) & tied_bits, count


def _lowest_rank(bits):
    """Rank of the lowest set bit of each column of int32 [W, P] bit sets; a large value
    where the set is empty. int32 throughout: int64 min-reductions are slow on the CPU."""
    lowest = bits & -bits
    # Exponent field of the float32 value of a power of two below 2**24 = bit index.
    bit_index = (lowest.float().view(torch.int32) >> 23) - 127
    offsets = torch.arange(bits.shape[0], device=bits.device, dtype=torch.int32)[:, None]
    empty = bits.shape[0] * _BITS_PER_WORD
    return torch.where(bits != 0, bit_index + offsets * _BITS_PER_WORD, empty).amin(0)


def first_by_rank(sem_chw, det_key, classes, inside_x, inside_y, thing_channels):
    """A per-detection tie key ([N], e.g. scores for highest_confidence): detections are
    ranked by it (stable: equal keys keep detection order) and the candidate of lowest rank
    wins.

    Returns (best_det float [h, w], below every logit where no box covers; det_slot int64
    [h, w]).
    """
    n = classes.shape[0]
    rank_order = torch.argsort(det_key, descending=True, stable=True)
    rank_of = torch.empty_like(rank_order).scatter_(
        0, rank_order, torch.arange(n, device=classes.device))
    best_det, candidates, _ = _candidate_bits(sem_chw, classes, inside_x, inside_y,
                                              thing_channels, rank_of)
    winner = _lowest_rank(candidates).view(best_det.shape)
    return best_det, rank_order.take(winner.clamp(max=n - 1).long())


def closest_center_by_bits(sem_chw, center_offsets, boxes, classes, inside_x, inside_y,
                           thing_channels, x, y):
    """closest_center on the CPU: a pixel with one candidate takes it; the pixels with several
    visit their candidates lowest index first, keeping the strictly nearest centre, so equal
    distances keep the lower detection index as the dense form does. Those pixels are sorted
    by candidate count once, so round r works on the prefix that still has candidates (the
    counts are read on the host: free on the CPU, not capturable).

    Returns (best_det float [h, w]; det_slot int64 [h, w]).
    """
    n = boxes.shape[0]
    index = torch.arange(n, device=boxes.device)
    best_det, remaining, count = _candidate_bits(sem_chw, classes, inside_x, inside_y,
                                                 thing_channels, index, want_count=True)
    best = _lowest_rank(remaining).clamp(max=n - 1).long()     # right where count <= 1
    several = torch.nonzero(count > 1)[:, 0]
    if several.numel():
        order = torch.argsort(count.take(several), descending=True)
        pixels = several.take(order)
        counts = count.take(pixels)
        # active[r]: pixels (a prefix) with more than r candidates.
        active = (counts[None, :] > torch.arange(int(counts[0]), dtype=counts.dtype)[:, None]) \
            .sum(1).tolist()
        bits = remaining.index_select(1, pixels)                                    # [W, M]
        cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
        cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
        px = (x[None, :] + center_offsets[0].float()).flatten().take(pixels)        # [M]
        py = (y[:, None] + center_offsets[1].float()).flatten().take(pixels)

        def distance(det, m):
            dx = px[:m] - cx.take(det)
            dy = py[:m] - cy.take(det)
            return dx * dx + dy * dy

        def drop_lowest(m):  # clear the visited (lowest) bit: x & (x - 1) in the first word
            rest = bits[:, :m]
            nonempty = rest != 0
            first_word = nonempty & (torch.cumsum(nonempty, 0) == 1)
            bits[:, :m] = torch.where(first_word, rest & (rest - 1), rest)

        nearest = best.take(pixels)                  # round 0: the lowest-index candidate
        best_dist = distance(nearest, len(pixels))
        for m in active[1:]:
            drop_lowest(m)   # the candidate visited last round (only pixels still looping)
            det = _lowest_rank(bits[:, :m]).long()     # every pixel here has one left
            dist = distance(det, m)
            better = dist < best_dist[:m]
            best_dist[:m] = torch.where(better, dist, best_dist[:m])
            nearest[:m] = torch.where(better, det, nearest[:m])
        best[pixels] = nearest
    return best_det, best.view(best_det.shape)


def paste_in_windows(sem_class, boxes, scores, classes, valid, overlap, x, y):
    """paste on the CPU: the same rule as reference.paste, each box handled in its own pixel
    window, in numpy (host arrays: a numpy call on a small window costs a fraction of a torch op).

    The windows and the keep decisions are read on the host (free on the CPU, not
    capturable); the comparison is the same float32 expression as in reference.paste.
    Returns (det_slot int64 [h, w], is_det bool [h, w]).
    """
    h, w = sem_class.shape
    # Pixel centres increase along each axis: a box covers a contiguous range of each.
    r0 = (y[None, :] < boxes[:, 1:2]).sum(1).tolist()
    r1 = (y[None, :] <= boxes[:, 3:4]).sum(1).tolist()
    c0 = (x[None, :] < boxes[:, 0:1]).sum(1).tolist()
    c1 = (x[None, :] <= boxes[:, 2:3]).sum(1).tolist()
    order = torch.argsort(torch.where(valid, scores.float(), float('-inf')),
                          descending=True, stable=True).tolist()
    is_valid = valid.tolist()
    category = classes.tolist()
    labels = sem_class.numpy()
    taken = np.zeros((h, w), dtype=bool)
    det_slot = np.zeros((h, w), dtype=np.int64)
    overlap = np.float32(overlap)
    for slot in order:
        if not is_valid[slot] or r1[slot] <= r0[slot] or c1[slot] <= c0[slot]:
            continue
        window = (slice(r0[slot], r1[slot]), slice(c0[slot], c1[slot]))
        mask = labels[window] == category[slot]
        area = np.float32(np.count_nonzero(mask))
        inter = np.float32(np.count_nonzero(mask & taken[window]))
        if not (area > 0 and inter <= overlap * area):
            continue
        new = mask & ~taken[window]
        det_slot[window][new] = slot
        taken[window] |= new
    return torch.from_numpy(det_slot), torch.from_numpy(taken)


def closest_borderness_in_windows(sem_class, boxes, scores, classes, valid, overlap, x, y,
                                  borderness_map, bx, by):
    """closest_borderness on the CPU: paste_in_windows' loop, and where a kept mask meets
    pixels an earlier kept mask holds, the pixel moves to it when its geometric border-ness
    (bx, by from reference.borderness_factors, the same float32 expression) is strictly
    closer to the predicted one. Returns (det_slot int64 [h, w], is_det bool [h, w])."""
    h, w = sem_class.shape
    r0 = (y[None, :] < boxes[:, 1:2]).sum(1).tolist()
    r1 = (y[None, :] <= boxes[:, 3:4]).sum(1).tolist()
    c0 = (x[None, :] < boxes[:, 0:1]).sum(1).tolist()
    c1 = (x[None, :] <= boxes[:, 2:3]).sum(1).tolist()
    order = torch.argsort(torch.where(valid, scores.float(), float('-inf')),
                          descending=True, stable=True).tolist()
    is_valid = valid.tolist()
    category = classes.tolist()
    labels = sem_class.numpy()
    predicted = borderness_map.float().numpy()
    bx, by = bx.numpy(), by.numpy()
    taken = np.zeros((h, w), dtype=bool)
    det_slot = np.zeros((h, w), dtype=np.int64)
    best = np.full((h, w), np.inf, dtype=np.float32)   # the holder's border-ness distance
    overlap = np.float32(overlap)
    for slot in order:
        if not is_valid[slot] or r1[slot] <= r0[slot] or c1[slot] <= c0[slot]:
            continue
        rows, cols = slice(r0[slot], r1[slot]), slice(c0[slot], c1[slot])
        window = (rows, cols)
        mask = labels[window] == category[slot]
        area = np.float32(np.count_nonzero(mask))
        held = mask & taken[window]
        inter = np.float32(np.count_nonzero(held))
        if not (area > 0 and inter <= overlap * area):
            continue
        geometric = np.sqrt(by[slot, rows][:, None] * bx[slot, cols][None, :])
        distance = np.abs(geometric - predicted[window])
        wins = (mask & ~taken[window]) | (held & (distance < best[window]))
        det_slot[window][wins] = slot
        best[window][wins] = distance[wins]
        taken[window] |= mask
    return torch.from_numpy(det_slot), torch.from_numpy(taken)


def refined_in_windows(sem_class, boxes, scores, classes, valid, x, y, semantic, kernels,
                       enabled, thing_index):
    """The refined policy on the CPU: each detection's refinement computed in its box's
    window grown by the kernel radius (where its mask can reach), painted in increasing
    (score, -index) order so that the highest score, then the lower index, holds a pixel.

    Args: semantic float [T, h, w] (MaskRefinement.semantic_term); kernels [N, k, k]
    (mask_kernels); enabled bool [N] (its class's refinement on); thing_index int64 [N].
    Returns (det_slot int64 [h, w], is_det bool [h, w]).
    """
    h, w = sem_class.shape
    k = kernels.shape[-1]
    r = k // 2
    r0 = (y[None, :] < boxes[:, 1:2]).sum(1).tolist()
    r1 = (y[None, :] <= boxes[:, 3:4]).sum(1).tolist()
    c0 = (x[None, :] < boxes[:, 0:1]).sum(1).tolist()
    c1 = (x[None, :] <= boxes[:, 2:3]).sum(1).tolist()
    score = scores.float().tolist()
    order = sorted(range(len(score)), key=lambda n: (score[n], -n))
    is_valid, refine = valid.tolist(), enabled.tolist()
    category, network = classes.tolist(), thing_index.tolist()
    det_slot, is_det = np.zeros((h, w), np.int64), np.zeros((h, w), bool)
    labels, semantic, weights = (t.detach().numpy() for t in (sem_class, semantic, kernels))
    for n in order:   # numpy throughout: per-op dispatch of torch would dominate
        if not is_valid[n] or r1[n] <= r0[n] or c1[n] <= c0[n]:
            continue
        if not refine[n]:
            window = (slice(r0[n], r1[n]), slice(c0[n], c1[n]))
            held = labels[window] == category[n]
        else:
            top, left = max(r0[n] - r, 0), max(c0[n] - r, 0)
            window = (slice(top, min(r1[n] + r, h)), slice(left, min(c1[n] + r, w)))
            height, width = window[0].stop - top, window[1].stop - left
            padded = np.zeros((height + 2 * r, width + 2 * r), np.float32)
            padded[r0[n] - top + r:r1[n] - top + r, c0[n] - left + r:c1[n] - left + r] = \
                labels[r0[n]:r1[n], c0[n]:c1[n]] == category[n]
            part = np.zeros((height, width), np.float32)   # the k x k cross-correlation
            for i in range(k):
                for j in range(k):
                    if weights[n][i, j] != 0:
                        part += weights[n][i, j] * padded[i:i + height, j:j + width]
            held = semantic[network[n]][window] + part > 0
        det_slot[window][held] = n
        is_det[window] |= held
    return torch.from_numpy(det_slot), torch.from_numpy(is_det)


def nearest_centres_of_members(px, py, cx, cy, is_centre, member):
    """reference.nearest_centres on the CPU for the member (thing) pixels only and the real
    centres only (they are the first slots: top-k sorts them first); other pixels get 0.
    The same float32 expression, so the same choice on every member pixel."""
    k = int(is_centre.sum())
    nearest = torch.zeros(px.numel(), dtype=torch.long)
    pixels = torch.nonzero(member)[:, 0]
    if k and pixels.numel():
        qx, qy = px.flatten()[pixels], py.flatten()[pixels]
        cx, cy = cx[None, :k], cy[None, :k]
        # in chunks of pixels, in place: the [chunk, k] distances stay in cache (5x faster
        # than one [P, k] pass); x * x is what ** 2 computes, so the values are the same
        for start in range(0, pixels.numel(), NEAREST_CHUNK):
            part = slice(start, start + NEAREST_CHUNK)
            dx, dy = qx[part, None] - cx, qy[part, None] - cy                    # [chunk, k]
            distance = dx.mul_(dx).add_(dy.mul_(dy))
            nearest[pixels[part]] = distance.argmin(1)
    return nearest.view(px.shape)
