"""Training losses of the single-shot network (Weber et al., section III "Joint Training").

L = lambda_o (L_FL + L_reg) + lambda_s L_s + lambda_i L_i:
focal loss and smooth-L1 box regression of torchvision's RetinaNet head (anchors matched
with IoU >= 0.5 foreground, < 0.4 background, every ground-truth box keeps its best anchor)
or, with LPSNet's box head, focal loss, GIoU and border-ness BCE on the locations inside the
ground-truth masks (`lpsnet_detection_loss`),
per-pixel cross-entropy on the semantic logits upsampled to the input size, and L1 on the
center offsets over thing pixels; with the center heatmap, Panoptic-DeepLab's MSE on it over
every pixel; with the border-ness map, BCE on LPSNet's border-ness over thing pixels.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from panoptic_ros.core.data import IGNORE


@dataclass(frozen=True)
class LossWeights:
    detection: float = 1.0    # lambda_o (the paper's best: equal weighting)
    semantic: float = 1.0     # lambda_s
    center: float = 0.1       # lambda_i (small: its raw L1 is far larger than the others)
    heatmap: float = 200.0    # Panoptic-DeepLab's heatmap weight (its MSE is tiny)
    borderness_map: float = 1.0   # BCE of the 1/4 border-ness map, like the box head's


class PanopticLoss(torch.nn.Module):
    """Computes the weighted loss and its parts from raw outputs and per-image targets."""

    def __init__(self, model, weights=LossWeights()):
        super().__init__()
        self.det_head = model.det_head
        self.weights = weights
        self.matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
        self.register_buffer('anchors', model.anchors(), persistent=False)
        self.num_anchors_per_level = [h * w for h, w in model.feature_sizes()]

    def forward(self, outputs, targets):
        """outputs: the model's dict; targets: list of PanopticTargets dicts (same device).

        Returns (total loss, {name: detached float tensor}).
        """
        if 'bbox_borderness' in outputs:
            losses = lpsnet_detection_loss(outputs, targets, self.anchors,
                                           self.num_anchors_per_level, self.det_head.box_coder)
        else:
            losses = self.retinanet_loss(outputs, targets)
        return self.dense_losses(outputs, targets, losses)

    def retinanet_loss(self, outputs, targets):
        """Match anchors to boxes, then torchvision's RetinaNet losses."""
        matched = []
        for t in targets:
            if t['boxes'].numel() == 0:
                matched.append(torch.full((self.anchors.shape[0],), -1, dtype=torch.int64,
                                          device=self.anchors.device))
            else:
                matched.append(self.matcher(box_iou(t['boxes'], self.anchors)))
        head_outputs = {'cls_logits': outputs['cls_logits'].float(),
                        'bbox_regression': outputs['bbox_regression'].float()}
        det_targets = [{'boxes': t['boxes'], 'labels': t['labels']} for t in targets]
        return self.det_head.compute_loss(det_targets, head_outputs,
                                          [self.anchors] * len(targets), matched)

    def dense_losses(self, outputs, targets, losses):
        """Semantic, center (and heatmap) losses added to the detection `losses`; the total."""
        # semantic: cross-entropy at input resolution
        semantic = torch.stack([t['semantic'] for t in targets])
        sem_logits = F.interpolate(outputs['sem_logits'].float(), size=semantic.shape[-2:],
                                   mode='bilinear', align_corners=False)
        losses['semantic'] = F.cross_entropy(sem_logits, semantic, ignore_index=IGNORE)
        # center: L1 over thing pixels at 1/4
        weights = torch.stack([t['center_weights'] for t in targets])[:, None]
        target = torch.stack([t['center_offsets'] for t in targets])
        l1 = (outputs['center_offsets'].float() - target).abs() * weights
        losses['center'] = l1.sum() / weights.sum().clamp(min=1)
        w = self.weights
        detection = losses['classification'] + losses['bbox_regression'] + \
            losses.get('borderness', 0.0)
        total = w.detection * detection + w.semantic * losses['semantic'] + \
            w.center * losses['center']
        # center heatmap: MSE at 1/4 (Panoptic-DeepLab), where the targets have it
        if 'center_heatmap' in outputs:
            target = torch.stack([t['center_heatmap'] for t in targets])
            losses['heatmap'] = F.mse_loss(outputs['center_heatmap'].float(), target)
            total = total + w.heatmap * losses['heatmap']
        # border-ness map: BCE over thing pixels at 1/4 (LPSNet's target)
        if 'borderness_map' in outputs:
            target = torch.stack([t['borderness_quarter'] for t in targets])[:, None]
            bce = F.binary_cross_entropy_with_logits(outputs['borderness_map'].float(), target,
                                                     reduction='none') * weights
            losses['borderness_map'] = bce.sum() / weights.sum().clamp(min=1)
            total = total + w.borderness_map * losses['borderness_map']
        return total, {k: v.detach() for k, v in losses.items()}


def lpsnet_matches(anchors, num_anchors_per_level, instance_index, boxes):
    """LPSNet's positives (section 3.2): a location is positive for the instance whose
    ground-truth mask contains it, where that box's size suits the level (FCOS's ranges: the
    largest distance to the box's sides within [4, 8] location sides, the first level from 0,
    the last unbounded). Masks are disjoint, so no tie rule is needed.

    Args: anchors float [A, 4] (location boxes, side = stride, centred on the location);
    num_anchors_per_level: A per level; instance_index int64 [H, W] (-1 outside things);
    boxes float [N, 4]. Returns matched int64 [A], the box index or -1.
    """
    h, w = instance_index.shape
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    px = centres[:, 0].floor().long().clamp(0, w - 1)
    py = centres[:, 1].floor().long().clamp(0, h - 1)
    inside = (centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & \
        (centres[:, 1] < h)
    matched = torch.where(inside, instance_index[py, px], -1)
    if boxes.numel() == 0:
        return torch.full_like(matched, -1)
    box = boxes[matched.clamp(min=0)]
    reach = torch.stack([centres[:, 0] - box[:, 0], centres[:, 1] - box[:, 1],
                         box[:, 2] - centres[:, 0], box[:, 3] - centres[:, 1]], 1).amax(1)
    side = anchors[:, 2] - anchors[:, 0]
    lower, upper = side * 4, side * 8
    lower[:num_anchors_per_level[0]] = 0
    upper[-num_anchors_per_level[-1]:] = float('inf')
    return torch.where((reach >= lower) & (reach <= upper), matched, -1)


def lpsnet_detection_loss(outputs, targets, anchors, num_anchors_per_level, box_coder):
    """LPSNet's box head losses, each summed over positives and divided by their number:
    sigmoid focal loss on the classes (every location), GIoU of the decoded boxes and BCE of
    the border-ness logits against the targets' border-ness at the positive locations."""
    cls_logits = outputs['cls_logits'].float()
    deltas = outputs['bbox_regression'].float()
    border_logits = outputs['bbox_borderness'].float()[..., 0]
    cls_target = torch.zeros_like(cls_logits)
    positive, box_targets, border_targets = [], [], []
    for b, t in enumerate(targets):
        matched = lpsnet_matches(anchors, num_anchors_per_level, t['instance_index'],
                                 t['boxes'])
        fg = matched >= 0
        cls_target[b, fg, t['labels'][matched[fg]]] = 1.0
        centres = ((anchors[fg, :2] + anchors[fg, 2:]) / 2).floor().long()
        positive.append(fg)
        box_targets.append(t['boxes'][matched[fg]])
        border_targets.append(t['borderness'][centres[:, 1], centres[:, 0]])
    positive = torch.stack(positive)
    num = max(1, int(positive.sum()))
    pred_boxes = box_coder.decode(deltas, anchors.expand(len(targets), -1, -1))
    return {
        'classification': sigmoid_focal_loss(cls_logits, cls_target, reduction='sum') / num,
        'bbox_regression': generalized_box_iou_loss(
            pred_boxes[positive], torch.cat(box_targets), reduction='sum') / num,
        'borderness': F.binary_cross_entropy_with_logits(
            border_logits[positive], torch.cat(border_targets), reduction='sum') / num,
    }
