"""Training losses of the single-shot network (Weber et al., section III "Joint Training").

L = lambda_o (L_FL + L_reg) + lambda_s L_s + lambda_i L_i:
focal loss and smooth-L1 box regression of torchvision's RetinaNet head (anchors matched
with IoU >= 0.5 foreground, < 0.4 background, every ground-truth box keeps its best anchor),
per-pixel cross-entropy on the semantic logits upsampled to the input size, and L1 on the
center offsets over thing pixels; with the center heatmap, Panoptic-DeepLab's MSE on it over
every pixel.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

from panoptic_ros.core.data import IGNORE


@dataclass(frozen=True)
class LossWeights:
    detection: float = 1.0    # lambda_o (the paper's best: equal weighting)
    semantic: float = 1.0     # lambda_s
    center: float = 0.1       # lambda_i (small: its raw L1 is far larger than the others)
    heatmap: float = 200.0    # Panoptic-DeepLab's heatmap weight (its MSE is tiny)


class PanopticLoss(torch.nn.Module):
    """Computes the weighted loss and its parts from raw outputs and per-image targets."""

    def __init__(self, model, weights=LossWeights()):
        super().__init__()
        self.det_head = model.det_head
        self.weights = weights
        self.matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
        self.register_buffer('anchors', model.anchors(), persistent=False)

    def forward(self, outputs, targets):
        """outputs: the model's dict; targets: list of PanopticTargets dicts (same device).

        Returns (total loss, {name: detached float tensor}).
        """
        # detection: match anchors to boxes, then torchvision's RetinaNet losses
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
        losses = self.det_head.compute_loss(det_targets, head_outputs,
                                            [self.anchors] * len(targets), matched)
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
        total = (w.detection * (losses['classification'] + losses['bbox_regression']) +
                 w.semantic * losses['semantic'] + w.center * losses['center'])
        # center heatmap: MSE at 1/4 (Panoptic-DeepLab), where the targets have it
        if 'center_heatmap' in outputs:
            target = torch.stack([t['center_heatmap'] for t in targets])
            losses['heatmap'] = F.mse_loss(outputs['center_heatmap'].float(), target)
            total = total + w.heatmap * losses['heatmap']
        return total, {k: v.detach() for k, v in losses.items()}
