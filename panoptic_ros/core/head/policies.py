"""Overlap policies: how the head resolves pixels that several same-class detections claim.

Each policy is one small object with a ``reference`` form (plain torch, any device) and,
where it pays, a ``fast`` CPU form tested equal to it; ``POLICIES`` names them for the
``overlap_policy`` parameter. A policy gets the frame's ``HeadInputs`` and returns
(det_slot int64 [h, w], the winning detection; is_det bool [h, w], where a detection wins).
A box-free policy (``makes_detections``) makes its own instance slots and returns
(det_slot, is_det, boxes, scores, classes, valid). ``needs`` names the network outputs a
policy reads beyond the semantic logits, offsets and detections (a model without them is
refused at start-up); ``learned`` names a learned part (core/head/learned.py) it runs,
found in ``HeadInputs.learned``. A new policy is a new class here and one entry in
``REGISTRY``.
"""

from dataclasses import dataclass

import torch

from panoptic_ros.core.head import fast_cpu, reference


@dataclass(frozen=True)
class HeadInputs:
    """One frame's tensors at the head's resolution (h, w); see the package docstring.

    sem_logits float32 [C, h, w] contiguous; sem_class int64 [h, w] (semantic_argmax);
    best_stuff_value float [h, w]; center_offsets float [2, h, w]; boxes float32 [N, 4];
    scores float [N]; classes int64 [N]; valid bool [N]; x [w], y [h] pixel centres in
    input pixels; inside_x bool [w, N], inside_y bool [h, N]; stuff_channels [S] and
    thing_channels [T] int64; paste_overlap float; is_thing bool [C]; center_heatmap float
    [h, w] or None; center_kernel int, center_threshold float (center_grouping);
    borderness_map float [h, w] in [0, 1] or None (closest_borderness); learned: the
    policy's learned module or None.
    """

    sem_logits: torch.Tensor
    sem_class: torch.Tensor
    best_stuff_value: torch.Tensor
    center_offsets: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    valid: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    inside_x: torch.Tensor
    inside_y: torch.Tensor
    stuff_channels: torch.Tensor
    thing_channels: torch.Tensor
    paste_overlap: float
    is_thing: torch.Tensor = None
    center_heatmap: torch.Tensor = None
    center_kernel: int = 3
    center_threshold: float = 0.1
    borderness_map: torch.Tensor = None
    learned: torch.nn.Module = None

    @property
    def on_cpu(self):
        return self.sem_logits.device.type == 'cpu'


class ArgmaxPolicy:
    """Weber et al.'s rule: the argmax of the instance-aware logits, same-logit detections
    ordered by the policy's ``tie_key`` (higher wins; then the lower detection index)."""

    name = ''
    needs = ()
    makes_detections = False
    learned = None

    def tie_key(self, inputs):
        """float [N] or [N, h, w]."""
        raise NotImplementedError

    def reference(self, inputs):
        logits = reference.instance_aware_logits(inputs.sem_logits, inputs.stuff_channels,
                                                 inputs.classes, inputs.inside_x,
                                                 inputs.inside_y)
        return reference.argmax_with_tie_key(logits, inputs.stuff_channels.shape[0],
                                             self.tie_key(inputs))

    def fast(self, inputs):
        if not inputs.on_cpu:
            return self.reference(inputs)
        best_det, det_slot = self.fast_candidates(inputs)
        return det_slot, best_det >= inputs.best_stuff_value   # a thing wins an exact tie

    def fast_candidates(self, inputs):
        """(best_det float [h, w], det_slot int64 [h, w]) for a per-detection key."""
        return fast_cpu.first_by_rank(inputs.sem_logits, self.tie_key(inputs), inputs.classes,
                                      inputs.inside_x, inputs.inside_y, inputs.thing_channels)


class HighestConfidence(ArgmaxPolicy):
    """The detection with the highest score wins."""

    name = 'highest_confidence'

    def tie_key(self, inputs):
        return inputs.scores.float()


class SmallestFirst(ArgmaxPolicy):
    """The detection with the smallest box wins (small objects in front of large ones)."""

    name = 'smallest_first'

    def tie_key(self, inputs):
        b = inputs.boxes
        return -((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


class ClosestCenter(ArgmaxPolicy):
    """The pixel moves by its predicted centre offset and joins the nearest box centre."""

    name = 'closest_center'

    def tie_key(self, inputs):
        return reference.center_distance_key(inputs.boxes, inputs.center_offsets, inputs.x,
                                             inputs.y)

    def fast_candidates(self, inputs):
        return fast_cpu.closest_center_by_bits(
            inputs.sem_logits, inputs.center_offsets, inputs.boxes, inputs.classes,
            inputs.inside_x, inputs.inside_y, inputs.thing_channels, inputs.x, inputs.y)


class Paste:
    """LPSNet's paste by confidence (*LPSNet: Lightweight Panoptic Segmentation Network*,
    section 3.4): masks are the box's pixels of its class, pasted by decreasing score, a
    mask overlapping the pasted ones by more than ``paste_overlap`` of its area discarded."""

    name = 'paste'
    needs = ()
    makes_detections = False
    learned = None

    def reference(self, inputs):
        return reference.paste(inputs.sem_class, inputs.classes, inputs.scores, inputs.valid,
                               inputs.inside_x, inputs.inside_y, inputs.paste_overlap)

    def fast(self, inputs):
        if not inputs.on_cpu:
            return self.reference(inputs)
        return fast_cpu.paste_in_windows(inputs.sem_class, inputs.boxes, inputs.scores,
                                         inputs.classes, inputs.valid, inputs.paste_overlap,
                                         inputs.x, inputs.y)


class CenterGrouping:
    """Panoptic-DeepLab's box-free grouping (*Panoptic-DeepLab*, section 3): instance centres
    by keypoint NMS on the center heatmap, thing pixels to the nearest centre after their
    offset, classes by majority vote; the detection branch is not read. The reference form
    is dense with static shapes (any device, capturable); the fast CPU form computes the
    distances for the thing pixels and the real centres only."""

    name = 'center_grouping'
    needs = ('center_heatmap',)
    makes_detections = True
    learned = None

    def reference(self, inputs):
        if inputs.center_heatmap is None:
            raise ValueError("overlap_policy 'center_grouping' needs the center heatmap")
        return reference.center_grouping(
            inputs.center_heatmap, inputs.center_offsets, inputs.sem_logits, inputs.sem_class,
            inputs.is_thing, inputs.x, inputs.y, inputs.center_kernel, inputs.center_threshold,
            inputs.scores.shape[0])

    def fast(self, inputs):
        if not inputs.on_cpu:
            return self.reference(inputs)
        return reference.center_grouping(
            _required(inputs.center_heatmap, self.name, 'center heatmap'),
            inputs.center_offsets, inputs.sem_logits, inputs.sem_class, inputs.is_thing,
            inputs.x, inputs.y, inputs.center_kernel, inputs.center_threshold,
            inputs.scores.shape[0], fast_cpu.nearest_centres_of_members)


class ClosestBorderness:
    """LPSNet's paste by confidence with the closest border-ness rule for same-class overlaps
    (*LPSNet*, section 3.4): a pixel several kept same-class masks hold goes to the box whose
    geometric border-ness there is closest to the predicted border-ness map."""

    name = 'closest_borderness'
    needs = ('borderness_map',)
    makes_detections = False
    learned = None

    def reference(self, inputs):
        return reference.closest_borderness(
            inputs.sem_class, inputs.boxes, inputs.classes, inputs.scores, inputs.valid,
            inputs.inside_x, inputs.inside_y, inputs.paste_overlap,
            _required(inputs.borderness_map, self.name, 'border-ness map'), inputs.x, inputs.y)

    def fast(self, inputs):
        if not inputs.on_cpu:
            return self.reference(inputs)
        bx, by = reference.borderness_factors(inputs.boxes, inputs.x, inputs.y)
        return fast_cpu.closest_borderness_in_windows(
            inputs.sem_class, inputs.boxes, inputs.scores, inputs.classes, inputs.valid,
            inputs.paste_overlap, inputs.x, inputs.y,
            _required(inputs.borderness_map, self.name, 'border-ness map'), bx, by)


class SpatialRanking(ArgmaxPolicy):
    """OANet's spatial ranking (*OANet*, section 3.2): same-class ties of the instance-aware
    logits go to the instance with the higher learned ranking score (the mean over its mask
    of the spatial ranking module's probability of its class)."""

    name = 'spatial_ranking'
    learned = 'spatial_ranking'

    def tie_key(self, inputs):
        return reference.spatial_ranking_scores(
            _required(inputs.learned, self.name, 'spatial ranking module'), inputs.sem_class,
            inputs.classes, inputs.thing_channels, inputs.inside_x, inputs.inside_y)


class Refined:
    """The INRIA report's CNN refinement: each box-cropped mask (its box's pixels of its
    class) goes through its class's refinement network where that class has it enabled; the
    refined masks then take their pixels by confidence."""

    name = 'refined'
    needs = ()
    makes_detections = False
    learned = 'refined'

    def reference(self, inputs):
        return self._assign(inputs, 'reference_logits')

    def fast(self, inputs):
        if not inputs.on_cpu:
            return self._assign(inputs, 'fast_logits')
        module = _required(inputs.learned, self.name, 'refinement networks')
        thing_index = self.thing_index(inputs)
        return fast_cpu.refined_in_windows(
            inputs.sem_class, inputs.boxes, inputs.scores, inputs.classes, inputs.valid,
            inputs.x, inputs.y, module.semantic_term(torch.softmax(inputs.sem_logits, 0)),
            module.mask_kernels(thing_index), module.enabled.take(thing_index), thing_index)

    @staticmethod
    def thing_index(inputs):
        """Each detection's refinement network, int64 [N]."""
        return reference.thing_index(inputs.thing_channels, inputs.classes)

    def refined_masks(self, inputs, form='fast_logits'):
        """(box-cropped masks bool [N, h, w], refined masks bool [N, h, w]): where the class
        has its refinement enabled, logit > 0 within the kernel's reach of the box."""
        module = _required(inputs.learned, self.name, 'refinement networks')
        inside = inputs.inside_y.T[:, :, None] & inputs.inside_x.T[:, None, :]
        masks = inside & (inputs.sem_class == inputs.classes[:, None, None])
        thing_index = self.thing_index(inputs)
        logits = getattr(module, form)(masks.float(), torch.softmax(inputs.sem_logits, 0),
                                       thing_index)
        k = module.kernel
        reach = torch.nn.functional.max_pool2d(inside[None].float(), k, 1, k // 2)[0] > 0
        enabled = module.enabled.take(thing_index)[:, None, None]
        return masks, torch.where(enabled, (logits > 0) & reach, masks)

    def _assign(self, inputs, form):
        _, refined = self.refined_masks(inputs, form)
        return reference.refined_assignment(refined, inputs.scores, inputs.valid)


def _required(value, policy, what):
    if value is None:
        raise ValueError(f'overlap_policy {policy!r} needs the {what}')
    return value


REGISTRY = {policy.name: policy for policy in (
    HighestConfidence(), SmallestFirst(), ClosestCenter(), Paste(), CenterGrouping(),
    ClosestBorderness(), SpatialRanking(), Refined())}
POLICIES = tuple(REGISTRY)
