"""Panoptic head: the configuration, the output and the fixed-size detection padding."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from panoptic_ros.core.head.policies import POLICIES

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
    # center_grouping's keypoint NMS at the head's 1/4 grid: Panoptic-DeepLab's max-pool of
    # 7 px and threshold 0.1 at input resolution, with a Gaussian of sigma 8 px. Our sigma is
    # 4 input px = one cell of the 1/4 grid, so 7 px shrink below a cell; 3 cells is the
    # smallest window that still suppresses a peak's neighbours.
    center_kernel: int = 3
    center_threshold: float = 0.1

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f'unknown overlap policy {self.policy!r}; choose one of {POLICIES}')
        if self.label_divisor < 2:
            raise ValueError(f'label_divisor must be >= 2, got {self.label_divisor}')
        if self.center_kernel < 1 or self.center_kernel % 2 == 0:
            raise ValueError(f'center_kernel must be odd and >= 1, got {self.center_kernel}')
        for name in ('stuff_area_fraction', 'min_kept_fraction', 'paste_overlap',
                     'center_threshold'):
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
