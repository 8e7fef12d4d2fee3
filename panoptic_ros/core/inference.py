"""Inference steps around the network, without ROS: preprocess -> backend -> decode -> head.

    rgb uint8 [h, w, 3] (camera image)
      -> Preprocessor: letterbox to the model input (width, height), normalise -> [1, 3, H, W]
      -> backend (panoptic_ros.core.backends): raw outputs of SingleShotPanoptic
      -> decode: score threshold, batched NMS, top-k; everything mapped back to camera pixels
      -> NetworkOutput: sem_logits [C, h4, w4] covering the image, center_offsets [2, h4, w4]
         (dx, dy in camera pixels), boxes [N, 4] (x1, y1, x2, y2 camera pixels), scores [N],
         classes [N] (semantic channel, int64)
      -> PanopticHead (panoptic_ros.core.head) -> panoptic ids at camera resolution

`FramePipeline` chains them (and checks the network output is finite before the head);
core.perception adds the occupancy step and is what the ROS node calls.
"""

import contextlib
from dataclasses import dataclass
import math
import time

import numpy as np
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from panoptic_ros.core.head import pad_detections, PanopticHead, PanopticHeadConfig
from panoptic_ros.core.head.policies import REGISTRY
from panoptic_ros.core.model import output_names, OUTPUT_STRIDE
from panoptic_ros.core.transform import Letterbox


@dataclass(frozen=True)
class DecodeConfig:
    score_threshold: float = 0.2     # the shipped model's best on val (docs in models/README.md)
    nms_iou: float = 0.5             # per-class NMS (RetinaNet)
    topk_candidates: int = 1000      # best anchors kept before NMS
    max_detections: int = 100        # after NMS; also the head's padded slot count
    borderness_score: bool = True    # LPSNet box head: score = confidence x border-ness
    cross_class_iou: float = 0.7     # different-class boxes overlapping more: one object

    def __post_init__(self):
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 < self.nms_iou <= 1.0 \
                or not 0.0 < self.cross_class_iou <= 1.0:
            raise ValueError(f'score_threshold {self.score_threshold} must be in [0, 1], '
                             f'nms_iou {self.nms_iou} and cross_class_iou '
                             f'{self.cross_class_iou} in (0, 1]')
        if self.topk_candidates < 1 or self.max_detections < 1:
            raise ValueError('topk_candidates and max_detections must be >= 1')


@dataclass
class NetworkOutput:
    """Decoded network outputs for one image, in camera-image pixels (see module docstring)."""
    sem_logits: torch.Tensor
    center_offsets: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    image_size: tuple     # (h, w) of the camera image
    center_heatmap: torch.Tensor = None   # [1, h4, w4] where the model has the heatmap
    borderness_map: torch.Tensor = None   # [1, h4, w4] in [0, 1] where the model has it


class Preprocessor:
    """Camera image -> network input by the shared letterbox transform (core.transform).

    Resizing runs in OpenCV on the host (uint8, cheap); normalisation on `device`.
    """

    def __init__(self, input_size, mean, std, device='cpu', dtype=torch.float32):
        self.letterbox = Letterbox(input_size, mean, std)
        self.input_size = self.letterbox.input_size
        self.device = torch.device(device)
        self.dtype = dtype

    def __call__(self, rgb):
        """rgb: uint8 numpy [h, w, 3] -> (input [1, 3, H, W] on device, scale)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f'expected uint8 RGB [h, w, 3], got {rgb.dtype} {rgb.shape}')
        resized, scale = self.letterbox.resize(rgb)
        return self.letterbox.to_input(resized, self.device, self.dtype)[None], scale


class Decoder:
    """Raw network outputs -> NetworkOutput in camera pixels (RetinaNet post-processing; for
    LPSNet's box head the class confidence times the predicted border-ness is the score, and
    the boxes are distances from the locations, as LPSNet section 3.2 decodes them)."""

    def __init__(self, anchors, thing_channels, config=DecodeConfig(), box_head='retinanet'):
        self.anchors = anchors                      # [A, 4] model-input pixels
        self.thing_channels = torch.as_tensor(thing_channels, dtype=torch.int64,
                                              device=anchors.device)
        self.config = config
        self.box_head = box_head
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True) \
            if box_head == 'lpsnet' else det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

    def __call__(self, raw, scale, image_size):
        """raw: backend outputs (batch 1); scale: letterbox scale; image_size: (h, w)."""
        cfg = self.config
        h, w = image_size
        num_classes = raw['cls_logits'].shape[-1]
        # candidates: every (anchor, class) above the threshold, best topk of them; only
        # those whose class logit alone can pass get a sigmoid (border-ness <= 1)
        logits = raw['cls_logits'][0].float().flatten()
        keep = torch.nonzero(logits > logit(cfg.score_threshold)).squeeze(1)
        scores = torch.sigmoid(logits[keep])
        if self.box_head == 'lpsnet' and cfg.borderness_score:   # x border-ness, before NMS
            borderness = raw['bbox_borderness'][0].float().flatten()
            scores = scores * torch.sigmoid(borderness[keep // num_classes])
        passing = scores > cfg.score_threshold
        keep, scores = keep[passing], scores[passing]
        if keep.numel() > cfg.topk_candidates:
            best = scores.topk(cfg.topk_candidates).indices
            keep, scores = keep[best], scores[best]
        anchor_idx, labels = keep // num_classes, keep % num_classes
        deltas = raw['bbox_regression'][0].float()[anchor_idx]
        boxes = self.box_coder.decode(deltas[None], self.anchors[anchor_idx][None])[0] \
            if self.box_head == 'lpsnet' else \
            self.box_coder.decode_single(deltas, self.anchors[anchor_idx])
        # into camera pixels, clipped to the image
        boxes = clip_boxes_to_image(boxes / scale, (h, w))
        keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[:cfg.max_detections]
        # dense outputs: crop the letterbox padding, offsets to camera pixels
        valid_h = math.ceil(round(h * scale) / OUTPUT_STRIDE)
        valid_w = math.ceil(round(w * scale) / OUTPUT_STRIDE)
        sem_logits = raw['sem_logits'][0, :, :valid_h, :valid_w]
        if cfg.cross_class_iou < 1.0:
            keep = keep[semantic_vote(boxes[keep], self.thing_channels[labels[keep]],
                                      sem_logits, OUTPUT_STRIDE / scale, cfg.cross_class_iou)]
        center_offsets = raw['center_offsets'][0, :, :valid_h, :valid_w].float() * \
            (OUTPUT_STRIDE / scale)
        heatmap, borderness = (None if raw.get(name) is None else
                               raw[name][0, :, :valid_h, :valid_w].float()
                               for name in ('center_heatmap', 'borderness_map'))
        return NetworkOutput(sem_logits=sem_logits, center_offsets=center_offsets,
                             boxes=boxes[keep], scores=scores[keep],
                             classes=self.thing_channels[labels[keep]], image_size=(h, w),
                             center_heatmap=heatmap,
                             borderness_map=None if borderness is None else
                             torch.sigmoid(borderness))


def semantic_vote(boxes, classes, sem_logits, cell, iou):
    """Which detections survive when the box head calls one object by two classes.

    boxes [N, 4] camera pixels, in falling score order (as NMS returns them); classes [N]
    semantic channels; sem_logits [C, h4, w4] on cells of `cell` camera pixels (their argmax
    is taken only where two boxes meet). Two boxes of different classes overlapping by IoU >
    `iou` are taken as one object, and the semantic branch decides its class by
    Panoptic-DeepLab's majority vote: the box whose class labels more cells of their
    intersection stays, the other goes (a tie keeps the higher score). Pairs are settled in
    score order, and a box that lost no longer votes. Returns the indices kept, in order.
    """
    overlap = box_iou(boxes, boxes) > iou
    overlap &= (classes[:, None] != classes[None, :])
    overlap = torch.triu(overlap, diagonal=1)
    if not bool(overlap.any()):
        return torch.arange(len(boxes), device=boxes.device)
    alive = [True] * len(boxes)
    for i, j in overlap.nonzero().tolist():        # row-major: i in score order
        if not (alive[i] and alive[j]):
            continue
        x1, y1 = torch.maximum(boxes[i, :2], boxes[j, :2]).tolist()
        x2, y2 = torch.minimum(boxes[i, 2:], boxes[j, 2:]).tolist()
        cells = sem_logits[:, int(y1 // cell):math.ceil(y2 / cell),
                           int(x1 // cell):math.ceil(x2 / cell)].argmax(0)
        votes_i, votes_j = (int((cells == classes[k]).sum()) for k in (i, j))
        alive[j if votes_i >= votes_j else i] = False
    return torch.nonzero(torch.tensor(alive, device=boxes.device)).squeeze(1)


def logit(p):
    """The logit whose sigmoid is p (p in [0, 1]; -inf and inf at the ends), a float."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


class NonFiniteOutput(RuntimeError):
    """The network produced NaN or inf: the frame cannot be used (checked before the head)."""

    def __init__(self, names):
        super().__init__(f'non-finite network output in {", ".join(names)}')
        self.names = names


class StageTimer:
    """Seconds per named stage of one frame: `with timer('network'): ...` (synchronises a
    CUDA device at the end of each stage so that the time is the stage's)."""

    def __init__(self, device=None):
        self.seconds = {}
        self._sync = device is not None and torch.device(device).type == 'cuda'
        self._device = device

    @contextlib.contextmanager
    def __call__(self, stage):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize(self._device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class FrameResult:
    """Everything the network stages produce for one frame (camera-image pixels)."""
    network: NetworkOutput
    panoptic: object            # panoptic_head.PanopticOutput
    timings: dict               # stage -> seconds: preprocess, network, decode, head


class FramePipeline:
    """Camera image -> panoptic output: preprocess -> backend -> decode -> finite check ->
    panoptic head, built once, called once per frame.

    backend: a panoptic_ros.core.backends backend (has .device, .model_config, .anchors,
    .input_dtype, __call__); decode_config: DecodeConfig; head_config: PanopticHeadConfig;
    upsample: the head's 'labels' or 'logits' mode; learned: policy name -> its learned
    module (e.g. learned.load_policy_weights bound to the model's file), asked only for a
    policy that has one. The stages may be given instead of built (`preprocess`, `decode`,
    `head`: callables with the signatures of Preprocessor, Decoder and PanopticHead), as
    torchvision's detection models take their parts.
    """

    def __init__(self, backend, decode_config=DecodeConfig(), head_config=PanopticHeadConfig(),
                 upsample='labels', preprocess=None, decode=None, head=None, learned=None):
        mc = backend.model_config
        self.backend = backend
        self.device = backend.device
        self.model_config = mc
        self.preprocess = preprocess or Preprocessor(mc.input_size, mc.mean, mc.std,
                                                     self.device, backend.input_dtype)
        self.decode = decode or Decoder(backend.anchors.to(self.device), mc.thing_channels,
                                        decode_config, mc.box_head)
        if head is None:
            check_policy_inputs(REGISTRY[head_config.policy], mc)
            policy_learned = REGISTRY[head_config.policy].learned
            module = learned(policy_learned) if policy_learned and learned else None
            head = PanopticHead(mc.is_thing, head_config, learned=module).to(self.device)
        self.head = head
        check_policy_inputs(self.head.policy, mc)
        self.max_detections = decode_config.max_detections
        self.upsample = upsample
        self.learned = learned

    def reconfigured(self, decode_config, head_config):
        """A pipeline on the same backend with other decode and head settings (the values a
        user may change while the node runs)."""
        return FramePipeline(self.backend, decode_config, head_config, self.upsample,
                             preprocess=self.preprocess, learned=self.learned)

    def __call__(self, rgb):
        """rgb: uint8 numpy [h, w, 3] -> FrameResult. Raises NonFiniteOutput when the
        network output holds NaN or inf (before the head reads it)."""
        return self.head_stage(*self.network_stage(rgb))

    def network_stage(self, rgb):
        """The first half, preprocess -> network -> decode -> finite check: (NetworkOutput,
        StageTimer). A caller may run it for the next frame while head_stage finishes this
        one (the two share no state)."""
        return self.network_stage_batch([rgb])[0]

    def network_stage_batch(self, images):
        """network_stage for several camera images in one network call (the newest frame
        of each camera): [(NetworkOutput, StageTimer)] in their order. The call takes
        backend.batch images (fewer are padded with zeros, whose outputs are not decoded);
        each frame's timer holds its own preprocess and decode and the call's network time.
        A non-finite output raises NonFiniteOutput for the whole batch."""
        batch = getattr(self.backend, 'batch', 1)
        if not 1 <= len(images) <= batch:
            raise ValueError(f'{len(images)} images for a network of batch {batch}')
        timers = [StageTimer(self.device) for _ in images]
        inputs = []
        for rgb, timer in zip(images, timers):
            with timer('preprocess'):
                inputs.append(self.preprocess(rgb))
        network = StageTimer(self.device)
        with network('network'):
            x = torch.cat([x for x, _ in inputs])
            if len(images) < batch:
                x = torch.cat([x, x.new_zeros((batch - len(images), *x.shape[1:]))])
            raw = self.backend(x)
        results, bad = [], []
        for k, (rgb, timer, (_, scale)) in enumerate(zip(images, timers, inputs)):
            timer.seconds['network'] = network.seconds['network']
            with timer('decode'):
                net = self.decode({name: value[k:k + 1] for name, value in raw.items()},
                                  scale, rgb.shape[:2])
                bad += check_finite({'sem_logits': net.sem_logits,
                                     'center_offsets': net.center_offsets,
                                     'boxes': net.boxes, 'scores': net.scores})
            results.append((net, timer))
        if bad:
            raise NonFiniteOutput(sorted(set(bad)))
        return results

    def head_stage(self, net, timer):
        """The second half, the panoptic head on network_stage's output -> FrameResult."""
        with timer('head'):
            boxes, scores, classes, valid = pad_detections(net.boxes, net.scores, net.classes,
                                                           self.max_detections)
            panoptic = self.head(net.sem_logits, net.center_offsets, boxes, scores, classes,
                                 valid, image_size=net.image_size, upsample=self.upsample,
                                 center_heatmap=net.center_heatmap,
                                 borderness_map=net.borderness_map)
        return FrameResult(network=net, panoptic=panoptic, timings=timer.seconds)


def check_policy_inputs(policy, model_config):
    """ValueError naming what is missing when the model cannot feed the overlap policy."""
    missing = [name for name in policy.needs if name not in output_names(model_config)]
    if missing:
        raise ValueError(f'overlap_policy {policy.name!r} needs the network output(s) '
                         f'{", ".join(missing)}, which this model does not produce (encoder '
                         f'{model_config.encoder}, box head {model_config.box_head}); choose '
                         'another policy or a model trained with them (config '
                         'train_sim_branches.yaml)')


def check_finite(tensors):
    """Names of the tensors of {name: tensor} that hold NaN or inf."""
    return [name for name, value in tensors.items() if not torch.isfinite(value).all()]
