"""Panoptic head, last step: a slot map at the head's resolution -> panoptic ids and per-slot
segment info at the output resolution (nearest upsampling; areas, boxes and scores counted at
the output resolution). Static shapes, any device."""

import functools

import torch

from panoptic_ros.core.head.config import PanopticOutput, VOID
from panoptic_ros.core.head.reference import counts


@functools.lru_cache(maxsize=16)
def _nearest_source(size_in, size_out, device):
    """Nearest-neighbour upsampling map: source index of each output index, and per source
    index its output count, first and last output index."""
    src = torch.arange(size_out, device=device) * size_in // size_out
    count = counts(src, size_in)
    positions = torch.arange(size_out, device=device)
    first = torch.full((size_in,), size_out, device=device)
    first = first.scatter_reduce(0, src, positions, 'amin')
    last = torch.full((size_in,), -1, device=device).scatter_reduce(0, src, positions, 'amax')
    return src, count, first, last


def _upsample_nearest(labels, out_h, out_w, row_src, col_src):
    """labels [h, w] -> [out_h, out_w] by the map of _nearest_source (integer factors: one
    broadcast copy; other factors: a gather)."""
    h, w = labels.shape
    if out_h % h == 0 and out_w % w == 0:
        fy, fx = out_h // h, out_w // w   # columns first, then whole rows (fastest on CPU)
        return labels.repeat_interleave(fx, 1).repeat(1, fy).view(out_h, out_w)
    return labels[row_src[:, None], col_src[None, :]]


def segments_from_slots(slots, log_sum, best_stuff_value, scores, classes, valid,
                        stuff_channels, label_divisor, image_size):
    """Panoptic ids, semantic ids and per-slot segment info at image_size from a slot map
    [h, w] (nearest upsampling; areas, boxes and scores counted at the output resolution).
    log_sum [h, w]: logsumexp of the semantic logits; best_stuff_value [h, w]: the largest
    stuff logit, the logit of a stuff pixel's class."""
    num_stuff = stuff_channels.shape[0]
    n = scores.shape[0]
    num_slots = num_stuff + n
    device = slots.device
    h, w = slots.shape
    out_h, out_w = image_size
    row_src, row_count, row_first, row_last = _nearest_source(h, out_h, device)
    col_src, col_count, col_first, col_last = _nearest_source(w, out_w, device)

    # Output pixels per head pixel; slot index 0 is void.
    weight = (row_count[:, None] * col_count[None, :]).flatten().float()
    flat = slots.flatten() + 1
    area = counts(flat, num_slots + 1, weight)[1:].long()

    # Category and instance id of every slot.
    slot_category = torch.cat([stuff_channels, classes]) + 1
    present = area > 0
    det_present = present[num_stuff:] & valid
    instance = torch.cumsum(det_present.long(), 0) * det_present
    slot_instance = torch.cat([torch.zeros(num_stuff, dtype=torch.long, device=device),
                               instance])
    segment_id = torch.where(present, slot_category * label_divisor + slot_instance, VOID)

    # Scores: detection score for things, mean softmax probability for stuff.
    prob = (best_stuff_value - log_sum).exp_().flatten()
    is_stuff = (flat > 0) & (flat <= num_stuff)
    stuff_score = counts(flat, num_slots + 1, (prob * weight * is_stuff).double())[
        1:num_stuff + 1]
    stuff_score = (stuff_score / area[:num_stuff].clamp(min=1)).float()
    score = torch.cat([stuff_score, scores.float()]) * present

    # Boxes of the output pixels of each slot (x2, y2 exclusive), from the rows and columns
    # each slot occupies (int32: int64 min/max reductions are slow on the CPU).
    big = max(out_h, out_w) + 1
    row_index, col_index = _nearest_source(h, h, device)[0], _nearest_source(w, w, device)[0]
    rows = counts(((slots + 1) * h + row_index[:, None]).flatten(),
                  (num_slots + 1) * h).view(num_slots + 1, h)[1:]
    cols = counts(((slots + 1) * w + col_index).flatten(),
                  (num_slots + 1) * w).view(num_slots + 1, w)[1:]
    rows = (rows > 0) & (row_count > 0)
    cols = (cols > 0) & (col_count > 0)
    box = torch.stack([
        torch.where(cols, col_first.int(), big).amin(1),
        torch.where(rows, row_first.int(), big).amin(1),
        torch.where(cols, col_last.int(), -1).amax(1) + 1,
        torch.where(rows, row_last.int(), -1).amax(1) + 1,
    ], 1).float() * present[:, None]

    lookup = torch.cat([torch.zeros(1, dtype=segment_id.dtype, device=device), segment_id])
    panoptic = _upsample_nearest(lookup.int().take(slots + 1), out_h, out_w, row_src, col_src)
    return PanopticOutput(
        panoptic=panoptic,
        label_divisor=label_divisor,
        segment_id=segment_id.int(),
        category_id=(slot_category * present).int(),
        is_thing=torch.cat([torch.zeros(num_stuff, dtype=torch.bool, device=device),
                            present[num_stuff:]]),
        score=score,
        area=area,
        box=box,
        det_segment_id=segment_id[num_stuff:].int(),
    )
