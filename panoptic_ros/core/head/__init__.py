"""Stage: panoptic head. Network outputs -> panoptic label image + segments.

The parameter-free head of Weber et al., *Single-Shot Panoptic Segmentation* (IROS 2020,
section III): the semantic logits are split into stuff and thing slices; every detection
takes the slice of its class, keeps it only inside its box, and is stacked with the stuff
logits into *instance-aware logits* [S + N, h, w]; the argmax gives each pixel a stuff class
or a detection. Detections that win no pixel vanish; thing pixels without a detection do not
become instances.

Ties. One rule everywhere: on an exact tie between a thing and a stuff logit the thing wins,
in the semantic argmax as in the instance-aware argmax (so a pixel whose thing and stuff
logits are equal and that a box of that class covers belongs to the detection, and without a
box it is an unexplained thing pixel). Among stuff classes, and among thing classes, the
lower channel wins. Among detections with the same instance-aware logit (same-class
overlaps) the *overlap policy* decides; its objects live in ``policies.POLICIES``:

- ``highest_confidence``: the detection with the highest score wins.
- ``smallest_first``: the detection with the smallest box area wins.
- ``closest_center``: the pixel moves by its predicted offset to its object centre and joins
  the detection whose box centre is nearest (L2, input pixels).
- ``paste``: the head of *LPSNet: Lightweight Panoptic Segmentation Network* (section 3.4):
  boxes are pasted in order of decreasing confidence; a box's mask is the pixels inside it
  whose semantic argmax is its class; a mask that overlaps already pasted masks by more than
  ``paste_overlap`` of its area is discarded, otherwise its non-overlapping part is kept.
- ``center_grouping``: *Panoptic-DeepLab*'s box-free rule (section 3): instance centres are
  the local maxima of the center heatmap (max-pool of ``center_kernel`` cells, above
  ``center_threshold``, the N highest); every thing pixel moves by its offset and joins the
  nearest centre; an instance's class is the majority of its pixels' semantic classes, its
  score the peak times the mean probability of that class; the detections are not read (the
  N slots are the centres'). Needs a model with the center heatmap.
- ``closest_borderness``: LPSNet's paste with its closest border-ness rule (section 3.4): a
  pixel that several kept same-class masks hold goes to the box whose geometric border-ness
  sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) at the pixel is closest to the
  predicted border-ness map. Needs a model with the border-ness map.
- ``spatial_ranking``: *OANet*'s spatial ranking module (section 3.2): the box masks mapped
  into a [T, h, w] instance map, a learned large-kernel convolution gives a ranking map, an
  instance's ranking score is the mean over its mask of its class's ranking probability;
  same-class ties of the instance-aware logits go to the higher ranking score.
- ``refined``: the INRIA report's CNN refinement: each box-cropped mask stacked with the
  semantic probabilities goes through its class's small network (channel-wise convolution,
  1 x 1 reduction, sigmoid) where the class has it enabled; the refined masks then take
  their pixels by confidence (a pixel no mask holds is stuff, or void if a thing pixel).
The last two have learned parts (``learned.py``), trained on a frozen network's outputs and
stored next to the model.
Remaining ties (equal scores, equal areas, equal distances) go to the lower detection index.

Post-processing: *unknowns* (pixels whose semantic argmax is a thing class but that no
detection explains become void rather than the best stuff class), removal of stuff segments
smaller than ``stuff_area_fraction`` of the image (the papers' 4096 px at COCO resolution is
4096 / (640 * 480) = 1.33 %), and removal of instances that keep less than
``min_kept_fraction`` of their own mask (pixels in their box whose semantic argmax is their
class); removed pixels become void.

Conventions (all tensors on one device; shapes for one image):

- ``sem_logits``: float [C, h, w]; channel k is category id k + 1 (category 0 is void).
  Finite and above -1e29 (network outputs are; the fast CPU forms rely on it).
- ``center_offsets``: float [2, h, w]; (dx, dy) in input-image pixels from a pixel's centre to
  the centre of its object; only read by ``closest_center`` and ``center_grouping``.
- ``boxes``: float [N, 4], (x1, y1, x2, y2) in input-image pixels; a pixel belongs to a box
  when its centre ((col + 0.5) * W / w, (row + 0.5) * H / h) lies in [x1, x2] x [y1, y2].
- ``scores``: float [N]; ``classes``: int64 [N] semantic channel of each detection (must be
  a thing channel); ``valid``: bool [N], False for padding. N is fixed (``max_detections``)
  so that the whole head has static shapes.
- panoptic id = category_id * label_divisor + instance_id; stuff has instance 0; things get
  instance ids 1, 2, ... in detection order; 0 is void.

Two forms, chosen once at construction (``PanopticHead(..., form=)``):

- ``reference`` (``reference.py``): plain torch on any device, read as the paper: build the
  instance-aware logits, break ties by the policy's key, take the argmax. Static shapes and
  no host synchronisation (``paste`` loops over the fixed N slots, its definition being
  sequential): CUDA-graph and export friendly.
- ``fast`` (default; ``fast_cpu.py``): on CPU tensors, forms that give the same result
  several times faster: bit sets instead of a [pixels x detections] array, index-free
  argmax, host-read loop bounds, numpy window paste. On other devices the reference form.
Tests hold fast == reference == a loop-based numpy oracle on random cases.

Files: ``config.py`` (PanopticHeadConfig, PanopticOutput, pad_detections), ``policies.py``
(one small object per overlap policy, the registry), ``reference.py``, ``fast_cpu.py``,
``learned.py`` (the learned modules of spatial_ranking and refined, their files),
``head.py`` (the module: checks, semantic argmax, policy, post-processing), ``segments.py``
(slot map -> panoptic ids and segment info at the output resolution).
"""

from panoptic_ros.core.head.config import (
    COCO_STUFF_AREA_FRACTION, PanopticHeadConfig, PanopticOutput, VOID, pad_detections)
from panoptic_ros.core.head.head import FORMS, PanopticHead
from panoptic_ros.core.head.policies import POLICIES

__all__ = ['COCO_STUFF_AREA_FRACTION', 'FORMS', 'POLICIES', 'PanopticHead',
           'PanopticHeadConfig', 'PanopticOutput', 'VOID', 'pad_detections']
