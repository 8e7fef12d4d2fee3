"""The panoptic head's learned parts: OANet's spatial ranking module and the INRIA report's
per-class mask refinement. Both are small torch modules trained on a frozen network's
outputs (``panoptic-ros-train-policy``) and stored next to the model as
``<model stem>.<policy>.safetensors``, with their configuration and training record in the
file's metadata; the head loads one only when its policy is chosen.
"""

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
import torch
import torch.nn.functional as F

FORMAT = 'panoptic_ros.head_policy/1'
METADATA_KEY = 'panoptic_ros'


class SpatialRankingModule(torch.nn.Module):
    """OANet's spatial ranking module (*OANet*, section 3.2): the instance masks mapped into a
    [T, h, w] tensor (1 where an instance of that thing class lies), then a large-kernel
    convolution (GCN's k x 1 then 1 x k beside 1 x k then k x 1) giving T + 1 ranking
    logits per pixel (the thing classes, then 'no thing'), a softmax over them.

    forward(instance_map float [B, T, h, w]) -> logits [B, T + 1, h, w].
    """

    def __init__(self, num_things, kernel=7):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f'kernel must be odd and >= 1, got {kernel}')
        self.num_things, self.kernel = num_things, kernel
        t, out, p = num_things, num_things + 1, kernel // 2
        self.left = torch.nn.Sequential(
            torch.nn.Conv2d(t, out, (kernel, 1), padding=(p, 0)),
            torch.nn.Conv2d(out, out, (1, kernel), padding=(0, p)))
        self.right = torch.nn.Sequential(
            torch.nn.Conv2d(t, out, (1, kernel), padding=(0, p)),
            torch.nn.Conv2d(out, out, (kernel, 1), padding=(p, 0)))

    def forward(self, instance_map):
        return self.left(instance_map) + self.right(instance_map)

    def config(self):
        return {'num_things': self.num_things, 'kernel': self.kernel}


class MaskRefinement(torch.nn.Module):
    """The INRIA report's convolutional panoptic head: per thing class one network taking an
    instance's mask stacked with the C semantic probabilities (C + 1 channels whatever the
    number of instances), a channel-wise k x k convolution, a 1 x 1 reduction to one channel
    and a sigmoid. ``enabled`` [T] says for which classes the refined mask is used (the
    report found it helps some classes and ruins others).

    Parameters per class t: depthwise [T, C + 1, k, k] and its bias [T, C + 1], pointwise
    [T, C + 1] and its bias [T]. Channel 0 is the instance's mask, 1..C the probabilities.
    """

    def __init__(self, num_things, num_classes, kernel=3):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f'kernel must be odd and >= 1, got {kernel}')
        self.num_things, self.num_classes, self.kernel = num_things, num_classes, kernel
        ch = num_classes + 1
        # Start as the identity on the mask: logit 10 m - 5, i.e. the mask itself at 0.5.
        depthwise = torch.zeros(num_things, ch, kernel, kernel)
        depthwise[:, 0, kernel // 2, kernel // 2] = 1.0
        pointwise = torch.zeros(num_things, ch)
        pointwise[:, 0] = 10.0
        self.depthwise = torch.nn.Parameter(depthwise)
        self.depthwise_bias = torch.nn.Parameter(torch.zeros(num_things, ch))
        self.pointwise = torch.nn.Parameter(pointwise)
        self.pointwise_bias = torch.nn.Parameter(torch.full((num_things,), -5.0))
        self.register_buffer('enabled', torch.ones(num_things, dtype=torch.bool))

    def reference_logits(self, masks, probabilities, thing_index):
        """The refinement as the report draws it: each instance's stacked input through its
        class's network.

        Args: masks float [N, h, w] (the box-cropped masks); probabilities float [C, h, w];
        thing_index int64 [N] (each instance's network). Returns: logits float [N, h, w].
        """
        n, (h, w) = masks.shape[0], masks.shape[1:]
        ch, k = self.num_classes + 1, self.kernel
        stacked = torch.cat([masks[:, None], probabilities[None].expand(n, -1, -1, -1)], 1)
        hidden = F.conv2d(stacked.reshape(1, n * ch, h, w),
                          self.depthwise[thing_index].reshape(n * ch, 1, k, k),
                          self.depthwise_bias[thing_index].reshape(n * ch), padding=k // 2,
                          groups=n * ch).view(n, ch, h, w)
        return torch.einsum('nchw,nc->nhw', hidden, self.pointwise[thing_index]) + \
            self.pointwise_bias[thing_index][:, None, None]

    def fast_logits(self, masks, probabilities, thing_index):
        """reference_logits by linearity (no activation between the two convolutions): the
        semantic part depends on the class only, computed once per class [T, h, w]; the mask
        part is one k x k convolution per instance."""
        k = self.kernel
        mask_part = F.conv2d(masks[None], self.mask_kernels(thing_index)[:, None],
                             padding=k // 2, groups=masks.shape[0])[0]
        return self.semantic_term(probabilities)[thing_index] + mask_part

    def semantic_term(self, probabilities):
        """The logit's part that the semantic probabilities [C, h, w] give each class's
        network, with every bias: float [T, h, w]."""
        weight = self.depthwise[:, 1:] * self.pointwise[:, 1:, None, None]      # [T, C, k, k]
        semantic = F.conv2d(probabilities[None], weight, padding=self.kernel // 2)[0]
        constant = (self.depthwise_bias * self.pointwise).sum(1) + self.pointwise_bias
        return semantic + constant[:, None, None]

    def mask_kernels(self, thing_index):
        """Each instance's k x k kernel on its mask (depthwise x pointwise), [N, k, k]."""
        return (self.depthwise[:, 0] * self.pointwise[:, 0, None, None])[thing_index]

    def config(self):
        return {'num_things': self.num_things, 'num_classes': self.num_classes,
                'kernel': self.kernel}


MODULES = {'spatial_ranking': SpatialRankingModule, 'refined': MaskRefinement}


def weights_path(model_path, policy):
    """Where a policy's learned weights for the model at `model_path` live."""
    model_path = Path(model_path)
    return model_path.with_name(f'{model_path.stem}.{policy}.safetensors')


def save_policy_weights(path, policy, module, classes, info=None):
    """Write `module` (the learned part of `policy`) with its config, the model's class
    names (checked on load) and the training record."""
    meta = {'format': FORMAT, 'policy': policy, 'config': module.config(),
            'classes': list(classes), 'info': info or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def load_policy_weights(path, policy, classes=None):
    """(module in eval mode, metadata) of `policy`'s learned part at `path`; ValueError
    naming the file when it is missing, of another policy or of a model with other classes."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"overlap_policy {policy!r} needs its learned weights at {path}, "
                         f"which do not exist: train them with `panoptic-ros-train-policy "
                         f"--policy {policy} --model MODEL` or choose another policy")
    with safe_open(str(path), framework='pt', device='cpu') as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
        state = {key: f.get_tensor(key) for key in f.keys()}
    if meta.get('format') != FORMAT or meta.get('policy') != policy:
        raise ValueError(f'{path} holds {meta.get("policy")!r} weights (format '
                         f'{meta.get("format")!r}), not {policy!r}')
    if classes is not None and list(classes) != meta['classes']:
        raise ValueError(f'{path} was trained for the classes {meta["classes"]}, the model '
                         f'has {list(classes)}')
    module = MODULES[policy](**meta['config'])
    module.load_state_dict(state)
    return module.eval(), meta


def loader_for(model_path, classes):
    """policy name -> its learned module for the model at `model_path` (FramePipeline's
    `learned`); ValueError naming the file when it is missing or does not fit."""
    def load(policy):
        return load_policy_weights(weights_path(model_path, policy), policy, classes)[0]
    return load
