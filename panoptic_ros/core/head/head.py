"""The panoptic head module: contracts, semantic argmax, the overlap policy, post-processing.

Rules and conventions: the package docstring (panoptic_ros/core/head/__init__.py).
"""

import torch
import torch.nn.functional as F

from panoptic_ros.core.head import fast_cpu, reference
from panoptic_ros.core.head.config import PanopticHeadConfig
from panoptic_ros.core.head.policies import HeadInputs, REGISTRY
from panoptic_ros.core.head.segments import segments_from_slots

FORMS = ('fast', 'reference')


class PanopticHead(torch.nn.Module):
    """The panoptic head as a module (parameter-free; torch.compile / CUDA-graph friendly in
    the reference form).

    Args:
        is_thing: bool sequence [C], True for thing channels of the semantic logits.
        config: PanopticHeadConfig; its ``policy`` names the overlap policy object.
        form: 'fast' (default) uses the fast CPU forms for CPU tensors and the reference form
            elsewhere; 'reference' always the reference form (no host reads anywhere: for
            CUDA graphs and export).
        learned: the policy's learned module (core/head/learned.py) when it has one.
    """

    def __init__(self, is_thing, config=PanopticHeadConfig(), form='fast', learned=None):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f'form must be one of {FORMS}, got {form!r}')
        is_thing = torch.as_tensor(list(is_thing), dtype=torch.bool)
        if not is_thing.any() or is_thing.all():
            raise ValueError('the class table needs at least one stuff and one thing class')
        self.config = config
        self.form = form
        self.policy = REGISTRY[config.policy]
        self._assign = self.policy.fast if form == 'fast' else self.policy.reference
        if self.policy.learned and learned is None:
            raise ValueError(f'overlap_policy {config.policy!r} needs its learned '
                             f'{self.policy.learned} weights (learned.load_policy_weights)')
        self.learned = learned
        self.register_buffer('is_thing', is_thing, persistent=False)
        self.register_buffer('stuff_channels', torch.nonzero(~is_thing)[:, 0], persistent=False)
        self.register_buffer('thing_channels', torch.nonzero(is_thing)[:, 0], persistent=False)

    def forward(self, sem_logits, center_offsets, boxes, scores, classes, valid,
                image_size=None, upsample='labels', center_heatmap=None, borderness_map=None):
        """Run the head for one image.

        Args:
            sem_logits, center_offsets, boxes, scores, classes, valid: see the package
                docstring.
            image_size: (H, W) of the input image; default the logits' size.
            upsample: 'labels' runs at the logits' resolution and upsamples the label map
                (nearest); 'logits' upsamples logits and offsets (bilinear) and runs at (H, W).
            center_heatmap: float [1, h, w] (Panoptic-DeepLab's center heatmap), read by the
                policies that need it (center_grouping; its N slots replace the detections).
            borderness_map: float [1, h, w] predicted border-ness in [0, 1] (LPSNet), read by
                closest_borderness.
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
            center_heatmap, borderness_map = (
                None if m is None else F.interpolate(m[None].float(), size=(out_h, out_w),
                                                     mode='bilinear', align_corners=False)[0]
                for m in (center_heatmap, borderness_map))
        elif upsample not in ('labels', 'logits'):
            raise ValueError(f"upsample must be 'labels' or 'logits', got {upsample!r}")
        sem_logits = sem_logits.float().contiguous()                               # [C, h, w]
        h, w = sem_logits.shape[1:]

        # Semantic class of every pixel (one tie rule) and the logsumexp for stuff scores.
        first_max = fast_cpu.first_max if self._fast_on(sem_logits) else None
        sem_class, best_stuff_value, best_stuff = reference.semantic_argmax(
            sem_logits, self.stuff_channels, self.thing_channels, first_max)
        log_sum = _logsumexp(sem_logits)
        # Box membership of the pixel centres (input-image pixels).
        x, y = reference.pixel_centres(h, w, (out_h, out_w), sem_logits.device)
        inside_x, inside_y = reference.box_membership(boxes, valid, x, y)
        # Same-class overlaps: the policy picks each pixel's detection.
        for name, m in (('center_heatmap', center_heatmap), ('borderness_map', borderness_map)):
            if m is not None and m.shape != (1, h, w):
                raise ValueError(f'{name} must be [1, h, w] = [1, {h}, {w}], got '
                                 f'{tuple(m.shape)}')
        assignment = self._assign(HeadInputs(
            sem_logits, sem_class, best_stuff_value, center_offsets, boxes.float(), scores,
            classes, valid, x, y, inside_x, inside_y, self.stuff_channels,
            self.thing_channels, self.config.paste_overlap, self.is_thing,
            None if center_heatmap is None else center_heatmap[0], self.config.center_kernel,
            self.config.center_threshold,
            None if borderness_map is None else borderness_map[0], self.learned))
        if self.policy.makes_detections:   # box-free: the policy's slots are the instances
            det_slot, is_det, boxes, scores, classes, valid = assignment
            inside_x, inside_y = reference.box_membership(boxes, valid, x, y)
        else:
            det_slot, is_det = assignment
        # Slot map: stuff slot s in [0, S), detection slot S + n, -1 void; post-processing.
        num_stuff = self.stuff_channels.shape[0]
        slots = torch.where(is_det, det_slot + num_stuff, best_stuff)
        slots = self._post_process(slots, is_det, det_slot, sem_class, classes, inside_x,
                                   inside_y)
        return segments_from_slots(slots, log_sum, best_stuff_value, scores, classes, valid,
                                   self.stuff_channels, self.config.label_divisor,
                                   (out_h, out_w))

    def _fast_on(self, tensor):
        return self.form == 'fast' and tensor.device.type == 'cpu'

    def _post_process(self, slots, is_det, det_slot, sem_class, classes, inside_x, inside_y):
        """Unknowns, instance removal and stuff removal on the slot map [h, w] (-> void -1)."""
        config = self.config
        num_stuff = self.stuff_channels.shape[0]
        num_slots = num_stuff + classes.shape[0]
        h, w = slots.shape
        # Thing pixels no detection explains.
        if config.unknowns:
            slots = torch.where(~is_det & self.is_thing.take(sem_class), -1, slots)
        # Instances keeping too little of their own mask.
        if config.min_kept_fraction > 0:
            won = reference.counts((slots + 1).flatten(), num_slots + 1)[1 + num_stuff:]
            own_area = reference.own_mask_area(sem_class, classes, inside_x, inside_y)
            drop = won.float() < config.min_kept_fraction * own_area
            slots = torch.where(is_det & drop[det_slot], -1, slots)
        # Small stuff regions.
        if config.stuff_area_fraction > 0:
            stuff_area = reference.counts((slots + 1).flatten(), num_slots + 1)[1:]
            small = stuff_area[:num_stuff].float() < config.stuff_area_fraction * h * w  # [S]
            in_small = (slots >= 0) & (slots < num_stuff) & \
                small.take(slots.clamp(0, num_stuff - 1))
            slots = torch.where(in_small, -1, slots)
        return slots


def _logsumexp(sem_logits):
    """torch.logsumexp over dim 0 of finite values [C, h, w], faster on the CPU."""
    top = sem_logits.amax(0)
    return (sem_logits - top).exp_().sum(0).log_().add_(top)


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
