"""Stage: panoptic head. Network outputs -> panoptic label image + segments.

The parameter-free head of Weber et al., *Single-Shot Panoptic Segmentation* (IROS 2020,
section III): the semantic logits are split into stuff and thing slices; every detection
takes the slice of its class, keeps it only inside its box, and is stacked with the stuff
logits into *instance-aware logits*; the argmax gives each pixel a stuff class or a
detection. Detections that win no pixel vanish; thing pixels without a detection do not
become instances.

Same-class overlaps (identical logits in the overlap) are resolved by a policy:

- ``highest_confidence``: the detection with the highest score wins.
- ``smallest_first``: the detection with the smallest box area wins.
- ``closest_center``: the pixel moves by its predicted offset to its object centre and joins
  the detection whose box centre is nearest (L2, input pixels).
- ``paste``: the head of *LPSNet: Lightweight Panoptic Segmentation Network* (section 3.4):
  boxes are pasted in order of decreasing confidence; a box's mask is the pixels inside it
  whose semantic argmax is its class; a mask that overlaps already pasted masks by more than
  ``paste_overlap`` of its area is discarded, otherwise its non-overlapping part is kept.

Post-processing: *unknowns* (pixels whose semantic argmax is a thing class but that no
detection explains become void rather than the best stuff class), removal of stuff segments
smaller than ``stuff_area_fraction`` of the image (the papers' 4096 px at COCO resolution is
4096 / (640 * 480) = 1.33 %), and removal of instances that keep less than
``min_kept_fraction`` of their own mask (pixels in their box whose semantic argmax is their
class); removed pixels become void.

Conventions (all tensors on one device; shapes for one image):

- ``sem_logits``: float [C, h, w]; channel k is category id k + 1 (category 0 is void).
  Finite and above -1e29 (network outputs are; the arithmetic argmax and the bit-set forms
  rely on it).
- ``center_offsets``: float [2, h, w]; (dx, dy) in input-image pixels from a pixel's centre to
  the centre of its object; only read by ``closest_center``.
- ``boxes``: float [N, 4], (x1, y1, x2, y2) in input-image pixels; a pixel belongs to a box
  when its centre ((col + 0.5) * W / w, (row + 0.5) * H / h) lies in [x1, x2] x [y1, y2].
- ``scores``: float [N]; ``classes``: int64 [N] semantic channel of each detection (must be
  a thing channel); ``valid``: bool [N], False for padding. N is fixed (``max_detections``)
  so that the whole head has static shapes.
- panoptic id = category_id * label_divisor + instance_id; stuff has instance 0; things get
  instance ids 1, 2, ... in detection order; 0 is void.

No Python loop over pixels or detections and no host synchronisation (``.item()``,
``.cpu()``, data-dependent shapes) on the hot path, with two documented exceptions: ``paste``
loops over the fixed N detection slots because its definition is sequential (each decision
depends on the masks kept before it), still without host synchronisation; and on the CPU,
unless ``capturable=True``, ``closest_center`` reads the candidate counts of the frame to
bound its loop and ``paste`` handles each box in its own pixel window, in numpy (host
reads cost nothing there). ``highest_confidence`` and
``smallest_first`` never build a [pixels x detections] array (see ``_candidate_bits``).
"""

from dataclasses import dataclass
import functools

import torch
import torch.nn.functional as F

POLICIES = ('highest_confidence', 'smallest_first', 'closest_center', 'paste')
VOID = 0
# The papers' stuff-removal threshold, 4096 px, relative to a 640 x 480 COCO image.
COCO_STUFF_AREA_FRACTION = 4096.0 / (640 * 480)


@dataclass(frozen=True)
class PanopticHeadConfig:
    """Values that do not change frame by frame."""

    policy: str = 'highest_confidence'
    label_divisor: int = 1000
    unknowns: bool = True                 # unexplained thing pixels -> void (else best stuff)
    stuff_area_fraction: float = COCO_STUFF_AREA_FRACTION  # 0 disables stuff removal
    min_kept_fraction: float = 0.0        # 0 keeps every instance that wins a pixel
    paste_overlap: float = 0.3            # LPSNet's discard threshold (paste policy)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f'unknown overlap policy {self.policy!r}; choose one of {POLICIES}')
        if self.label_divisor < 2:
            raise ValueError(f'label_divisor must be >= 2, got {self.label_divisor}')
        for name in ('stuff_area_fraction', 'min_kept_fraction', 'paste_overlap'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')


@dataclass
class PanopticOutput:
    """Result of the head for one image; every tensor has a fixed shape.

    panoptic: int32 [H, W] panoptic ids; ``semantic()`` gives int32 [H, W] category ids (0
    void), computed only when asked for. Segment slots (S stuff classes first, then the N
    detection slots), each [S + N]:
    segment_id (int32, 0 for an empty slot), category_id (int32), is_thing (bool),
    score (float), area (int64 pixels), box (float [S + N, 4], x1, y1 inclusive, x2, y2
    exclusive, output pixels). det_segment_id: int32 [N], the segment id each detection became
    (0 if it won no pixel or was removed).
    """

    panoptic: torch.Tensor
    label_divisor: int
    segment_id: torch.Tensor
    category_id: torch.Tensor
    is_thing: torch.Tensor
    score: torch.Tensor
    area: torch.Tensor
    box: torch.Tensor
    det_segment_id: torch.Tensor

    def semantic(self):
        """Category id of every pixel, int32 [H, W] (0 void)."""
        return torch.div(self.panoptic, self.label_divisor, rounding_mode='floor')

    def segments(self):
        """Non-empty segments as a list of dicts (one host synchronisation)."""
        keep = (self.segment_id != VOID).cpu()
        fields = {name: getattr(self, name).cpu()[keep].tolist()
                  for name in ('segment_id', 'category_id', 'is_thing', 'score', 'area', 'box')}
        return [dict(zip(fields, values)) for values in zip(*fields.values())]


def pad_detections(boxes, scores, classes, max_detections):
    """Pad (or cut, keeping the highest scores) detections to a fixed count >= 1.

    Args: boxes float [n, 4], scores float [n], classes int64 [n] (n may be 0).
    Returns: boxes [N, 4], scores [N], classes [N], valid bool [N] with N = max_detections.
    """
    if max_detections < 1:
        raise ValueError(f'max_detections must be >= 1, got {max_detections}')
    n = boxes.shape[0]
    if n > max_detections:
        order = torch.argsort(scores, descending=True, stable=True)[:max_detections]
        order = torch.sort(order).values  # keep the original order among the kept
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        n = max_detections
    pad = max_detections - n
    valid = torch.zeros(max_detections, dtype=torch.bool, device=boxes.device)
    valid[:n] = True
    return (F.pad(boxes, (0, 0, 0, pad)), F.pad(scores, (0, pad)),
            F.pad(classes, (0, pad)), valid)


class PanopticHead(torch.nn.Module):
    """The panoptic head as a module (parameter-free; torch.compile / CUDA-graph friendly).

    Args:
        is_thing: bool sequence [C], True for thing channels of the semantic logits.
        config: PanopticHeadConfig.
        capturable: True keeps every step free of host reads, for CUDA graphs and export
            (always the case on CUDA). False (default) lets closest_center and paste on the
            CPU read counts and box windows on the host, several times faster with many
            detections.
    """

    def __init__(self, is_thing, config=PanopticHeadConfig(), capturable=False):
        super().__init__()
        self.capturable = capturable
        is_thing = torch.as_tensor(list(is_thing), dtype=torch.bool)
        if not is_thing.any() or is_thing.all():
            raise ValueError('the class table needs at least one stuff and one thing class')
        self.config = config
        self.register_buffer('is_thing', is_thing, persistent=False)
        self.register_buffer('stuff_channels', torch.nonzero(~is_thing)[:, 0], persistent=False)
        self.register_buffer('thing_channels', torch.nonzero(is_thing)[:, 0], persistent=False)

    def forward(self, sem_logits, center_offsets, boxes, scores, classes, valid,
                image_size=None, upsample='labels'):
        """Run the head for one image.

        Args:
            sem_logits, center_offsets, boxes, scores, classes, valid: see module docstring.
            image_size: (H, W) of the input image; default the logits' size.
            upsample: 'labels' runs at the logits' resolution and upsamples the label map
                (nearest); 'logits' upsamples logits and offsets (bilinear) and runs at (H, W).
        Returns:
            PanopticOutput at (H, W).
        """
        _check_inputs(sem_logits, center_offsets, boxes, scores, classes, valid, self.is_thing)
        if self.config.label_divisor <= scores.shape[0]:   # a shape: no host synchronisation
            raise ValueError(f'label_divisor {self.config.label_divisor} must exceed the '
                             f'{scores.shape[0]} detection slots: larger instance ids would '
                             'decode to another category')
        h, w = sem_logits.shape[-2:]
        out_h, out_w = image_size if image_size is not None else (h, w)
        if upsample == 'logits' and (out_h, out_w) != (h, w):
            sem_logits = F.interpolate(sem_logits[None], size=(out_h, out_w), mode='bilinear',
                                       align_corners=False)[0]
            center_offsets = F.interpolate(center_offsets[None], size=(out_h, out_w),
                                           mode='bilinear', align_corners=False)[0]
        elif upsample not in ('labels', 'logits'):
            raise ValueError(f"upsample must be 'labels' or 'logits', got {upsample!r}")
        sem_chw = sem_logits.float().contiguous()                                  # [C, h, w]
        # Semantic argmax and logsumexp from one subtraction of the per-pixel maximum.
        top = sem_chw.amax(0)
        shifted = sem_chw - top
        log_sum = shifted.exp().sum(0).log_().add_(top)
        sem_class = _first_zero(shifted)
        # Pixel assignment at the head's resolution: slot map, -1 void.
        slots, best_stuff_value = assign_slots(
            sem_chw, sem_class, center_offsets, boxes, scores, classes, valid, self.is_thing,
            self.stuff_channels, self.thing_channels, self.config, (out_h, out_w),
            self.capturable)
        return _segments_from_slots(slots, log_sum, best_stuff_value, scores, classes, valid,
                                    self.stuff_channels, self.config.label_divisor,
                                    (out_h, out_w))


def _check_inputs(sem_logits, center_offsets, boxes, scores, classes, valid, is_thing):
    """Shape and dtype contracts (static checks only: no host synchronisation)."""
    if sem_logits.dim() != 3 or sem_logits.shape[0] != is_thing.shape[0]:
        raise ValueError(f'sem_logits must be [C={is_thing.shape[0]}, h, w], '
                         f'got {tuple(sem_logits.shape)}')
    if center_offsets.shape != (2,) + tuple(sem_logits.shape[1:]):
        raise ValueError(f'center_offsets must be [2, h, w] = [2, {sem_logits.shape[1]}, '
                         f'{sem_logits.shape[2]}], got {tuple(center_offsets.shape)}')
    n = boxes.shape[0]
    if boxes.shape != (n, 4) or scores.shape != (n,) or classes.shape != (n,) \
            or valid.shape != (n,):
        raise ValueError(f'boxes [N, 4], scores, classes and valid [N] must agree, got '
                         f'{tuple(boxes.shape)}, {tuple(scores.shape)}, '
                         f'{tuple(classes.shape)}, {tuple(valid.shape)}')
    if n < 1:
        raise ValueError('at least one detection slot is needed: pad with pad_detections()')
    if classes.dtype != torch.int64 or valid.dtype != torch.bool:
        raise ValueError(f'classes must be int64 and valid bool, got {classes.dtype}, '
                         f'{valid.dtype}')


# Geometry depends only on the grid and image sizes: computed once per camera, then cached
# (read-only tensors).
@functools.lru_cache(maxsize=16)
def pixel_centres(h, w, image_size, device):
    """Centres of the (h, w) grid's pixels in input-image pixels: (x [w], y [h]), float32."""
    out_h, out_w = image_size
    x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (out_w / w)
    y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (out_h / h)
    return x, y


def _first_max(values):
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


def assign_slots(sem_chw, sem_class, center_offsets, boxes, scores, classes, valid, is_thing,
                 stuff_channels, thing_channels, config, image_size, capturable=True):
    """Assign every pixel a slot: stuff slot s in [0, S), detection slot S + n, or -1 (void).

    Args: sem_chw float32 [C, h, w], contiguous, finite; sem_class int64 [h, w], its first
    argmax over classes; capturable: False allows the CPU forms that read a count on the
    host; the rest as in the module docstring.
    Returns (slots int64 [h, w], best stuff logit float [h, w]). See the module docstring for
    the rules.
    """
    num_stuff = stuff_channels.shape[0]
    n = boxes.shape[0]
    h, w = sem_chw.shape[1:]
    x, y = pixel_centres(h, w, tuple(image_size), sem_chw.device)
    boxes = boxes.float()
    # inside_x[w, N], inside_y[h, N]: pixel centres within each box (padding never inside).
    inside_x = (x[:, None] >= boxes[:, 0]) & (x[:, None] <= boxes[:, 2]) & valid
    inside_y = (y[:, None] >= boxes[:, 1]) & (y[:, None] <= boxes[:, 3])

    best_stuff_value, best_stuff = _first_max(sem_chw.index_select(0, stuff_channels))
    # The CPU forms read counts and box windows on the host: never when capturable.
    host_reads = not capturable and sem_chw.device.type == 'cpu'

    if config.policy == 'paste' and not host_reads:
        own_mask = inside_y[:, None, :] & inside_x[None, :, :] & \
            (sem_class[..., None] == classes)                                     # [h, w, N]
        det_slot, is_det = _paste(own_mask, scores, valid, config.paste_overlap)
    elif config.policy == 'paste':
        det_slot, is_det = _paste_in_windows(sem_class, boxes, scores, classes, valid,
                                             config.paste_overlap, x, y)
    else:
        if config.policy == 'closest_center' and not host_reads:
            best_det, det_slot = _closest_center(sem_chw, center_offsets, boxes, classes,
                                                 inside_x, inside_y, x, y)
        elif config.policy == 'closest_center':
            best_det, det_slot = _closest_center_by_bits(sem_chw, center_offsets, boxes,
                                                         classes, inside_x, inside_y,
                                                         thing_channels, x, y)
        else:
            best_det, det_slot = _first_by_rank(sem_chw, boxes, scores, classes, inside_x,
                                                inside_y, thing_channels, config.policy)
        # Stuff channels precede detections in the stacked logits: ties go to stuff.
        is_det = best_det > best_stuff_value

    slots = torch.where(is_det, det_slot + num_stuff, best_stuff)
    if config.unknowns:
        slots = torch.where(~is_det & is_thing.take(sem_class), -1, slots)

    # Instances keeping too little of their own mask are removed (-> void).
    if config.min_kept_fraction > 0:
        won = torch.bincount((slots + 1).flatten(), minlength=num_stuff + n + 1)[1 + num_stuff:]
        own_area = _own_mask_area(sem_class, classes, inside_x, inside_y, sem_chw.shape[0])
        drop = won.float() < config.min_kept_fraction * own_area
        slots = torch.where(is_det & drop[det_slot], -1, slots)

    # Small stuff regions are removed (-> void).
    if config.stuff_area_fraction > 0:
        stuff_area = torch.bincount((slots + 1).flatten(), minlength=num_stuff + n + 1)[1:]
        small = stuff_area[:num_stuff].float() < config.stuff_area_fraction * h * w   # [S]
        in_small = (slots >= 0) & (slots < num_stuff) & small.take(slots.clamp(0, num_stuff - 1))
        slots = torch.where(in_small, -1, slots)
    return slots, best_stuff_value


# Instance-aware logit of a detection outside its box in the bit-set forms (_candidate_bits,
# every device): logits must be finite and above -1e29 (network outputs are); x + _UNCOVERED
# rounds to about _UNCOVERED for them.
_UNCOVERED = -1e30
# Detection bit sets: 24 detections per int32 word, so that a float32 sum of distinct bits of
# one word (a product of 0/1 matrices) is exact, and so is a power of two's float32 exponent.
_BITS_PER_WORD = 24


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
    # Union of the tied classes' detection bits (disjoint per class: a sum), & covering. A
    # float32 product is exact on the CPU (sums below 2**24); CUDA may round matmul inputs
    # to TF32, so it sums integers. Word-major [W, P]: reductions over words run over dim 0.
    class_bits = pack(of_class.T > 0)                                             # [W, T]
    if device.type == 'cpu':
        tied_bits = (class_bits.float() @ tied).int()                             # [W, P]
    else:
        tied_bits = (class_bits[:, :, None] * tied.int()[None]).sum(1, dtype=torch.int32)
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


def _first_by_rank(sem_chw, boxes, scores, classes, inside_x, inside_y, thing_channels,
                   policy):
    """highest_confidence / smallest_first: detections are ranked by the policy key (stable:
    equal keys keep detection order) and the candidate of lowest rank wins.

    Returns (best_det float [h, w], below every logit where no box covers; det_slot int64
    [h, w]).
    """
    n = boxes.shape[0]
    rank_order = torch.argsort(_static_key(policy, boxes, scores), descending=True,
                               stable=True)
    rank_of = torch.empty_like(rank_order).scatter_(
        0, rank_order, torch.arange(n, device=boxes.device))
    best_det, candidates, _ = _candidate_bits(sem_chw, classes, inside_x, inside_y,
                                              thing_channels, rank_of)
    winner = _lowest_rank(candidates).view(best_det.shape)
    return best_det, rank_order.take(winner.clamp(max=n - 1).long())


def _closest_center_by_bits(sem_chw, center_offsets, boxes, classes, inside_x, inside_y,
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


def _closest_center(sem_chw, center_offsets, boxes, classes, inside_x, inside_y, x, y):
    """closest_center, capturable form: among the detections with the maximal instance-aware
    logit, the one whose box centre is nearest to (pixel + predicted offset); dense over
    [h, w, N], ties to the lower detection index.

    Returns (best_det float [h, w], -inf where no box covers; det_slot int64 [h, w]).
    """
    inside = inside_y[:, None, :] & inside_x[None, :, :]                         # [h, w, N]
    # Instance-aware logits of the detections: their class slice, -inf outside the box.
    sem_hwc = sem_chw.permute(1, 2, 0).contiguous()                              # [h, w, C]
    det_logits = torch.where(inside, _class_slices(sem_hwc, classes), float('-inf'))
    best_det = det_logits.amax(-1)
    candidates = (det_logits == best_det[..., None]) & inside
    key = _closest_center_key(boxes, center_offsets, x, y)                        # [h, w, N]
    return best_det, torch.where(candidates, key, float('-inf')).argmax(-1)


def _own_mask_area(sem_class, classes, inside_x, inside_y, num_classes):
    """Pixels in each detection's box whose semantic argmax is its class, float [N].

    Boxes are separable: area_n = sum_r Y[r, n] * (M_c @ X)[r, n] with M_c the [h, w]
    indicator of class c = classes[n]; a float32 product of 0/1 values, exact below 2**24.
    """
    n = classes.shape[0]
    masks = F.one_hot(sem_class, num_classes).permute(2, 0, 1).float()            # [C, h, w]
    per_class = masks @ inside_x.float()                                          # [C, h, N]
    per_det = per_class[classes, :, torch.arange(n, device=classes.device)]       # [N, h]
    return (per_det * inside_y.T.float()).sum(1)


def _class_slices(sem_hwc, classes):
    """sem_hwc[..., classes] as [h, w, N].

    On the CPU a product with a one-hot matrix is several times faster than a gather on the
    last axis and exact for finite logits (each output is x * 1 plus zeros). CUDA keeps the
    gather, so TF32 matmul settings can never round the logits.
    """
    if sem_hwc.device.type != 'cpu':
        return sem_hwc.index_select(-1, classes)
    one_hot = F.one_hot(classes, sem_hwc.shape[-1]).to(sem_hwc.dtype).T          # [C, N]
    return sem_hwc @ one_hot


def _static_key(policy, boxes, scores):
    """Per-detection preference for same-logit overlaps; higher wins."""
    if policy == 'highest_confidence':
        return scores.float()
    return -((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # smallest_first


def _closest_center_key(boxes, center_offsets, x, y):
    """Minus the squared distance from (pixel + predicted offset) to each box centre [h, w, N]."""
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    px = x[None, :] + center_offsets[0].float()                                  # [h, w]
    py = y[:, None] + center_offsets[1].float()
    dx = px[..., None] - cx
    dy = py[..., None] - cy
    return -(dx * dx + dy * dy)


def _paste(own_mask, scores, valid, overlap):
    """LPSNet paste-by-confidence of the masks [h, w, N] over the fixed N detection slots.

    Returns (det_slot int64 [h, w], is_det bool [h, w]).
    """
    h, w, n = own_mask.shape
    masks = own_mask.permute(2, 0, 1).reshape(n, h * w).contiguous()           # [N, P]
    areas = masks.sum(1).float()
    order = torch.argsort(torch.where(valid, scores.float(), float('-inf')),
                          descending=True, stable=True)
    taken = torch.zeros(h * w, dtype=torch.bool, device=own_mask.device)
    det_slot = torch.zeros(h * w, dtype=torch.long, device=own_mask.device)
    for rank in range(n):  # fixed trip count (N slots): no host synchronisation
        slot = order[rank]
        mask = masks[slot]
        inter = (mask & taken).sum().float()
        keep = (areas[slot] > 0) & (inter <= overlap * areas[slot])
        new = mask & ~taken & keep
        det_slot = torch.where(new, slot, det_slot)
        taken = taken | new
    return det_slot.view(h, w), taken.view(h, w)


@functools.lru_cache(maxsize=16)
def _nearest_source(size_in, size_out, device):
    """Nearest-neighbour upsampling map: source index of each output index, and per source
    index its output count, first and last output index."""
    src = torch.arange(size_out, device=device) * size_in // size_out
    count = torch.bincount(src, minlength=size_in)
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


def _paste_in_windows(sem_class, boxes, scores, classes, valid, overlap, x, y):
    """paste on the CPU: the same rule as _paste, each box handled in its own pixel window,
    in numpy (host arrays: a numpy call on a small window costs a fraction of a torch op).

    The windows and the keep decisions are read on the host (free on the CPU, not
    capturable); the comparison is the same float32 expression as in _paste.
    Returns (det_slot int64 [h, w], is_det bool [h, w]).
    """
    import numpy as np
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


def _segments_from_slots(slots, log_sum, best_stuff_value, scores, classes, valid,
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
    area = torch.bincount(flat, weights=weight, minlength=num_slots + 1)[1:].long()

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
    stuff_score = torch.bincount(flat, weights=(prob * weight * is_stuff).double(),
                                 minlength=num_slots + 1)[1:num_stuff + 1]
    stuff_score = (stuff_score / area[:num_stuff].clamp(min=1)).float()
    score = torch.cat([stuff_score, scores.float()]) * present

    # Boxes of the output pixels of each slot (x2, y2 exclusive), from the rows and columns
    # each slot occupies (int32: int64 min/max reductions are slow on the CPU).
    big = max(out_h, out_w) + 1
    row_index, col_index = _nearest_source(h, h, device)[0], _nearest_source(w, w, device)[0]
    rows = torch.bincount(((slots + 1) * h + row_index[:, None]).flatten(),
                          minlength=(num_slots + 1) * h).view(num_slots + 1, h)[1:]
    cols = torch.bincount(((slots + 1) * w + col_index).flatten(),
                          minlength=(num_slots + 1) * w).view(num_slots + 1, w)[1:]
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
