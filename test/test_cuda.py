"""CUDA: the network, the frame pipeline and the head on a GPU agree with the CPU, and the
head's reference form captures into a CUDA graph.

Verifies (where a GPU exists; every test skips without one): the network's outputs on CUDA
in fp32 and fp16 against the CPU; the shipped model's frame pipeline on CUDA against the CPU
on a rendered frame (same detections, semantic labels); every overlap policy's reference form
captured in a CUDA graph replays to the eager result on new inputs copied into the captured
buffers (no host synchronisation inside). Imports nothing beyond torch, numpy and OpenCV, so
benchmarks/gpu_check.sh runs it on a bare GPU machine. Does not verify speed
(benchmarks/gpu_check.py) nor the TensorRT backend.
"""

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from panoptic_ros.core.backends import TorchBackend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.head import POLICIES, PanopticHead, PanopticHeadConfig
from panoptic_ros.core.head.learned import MaskRefinement, SpatialRankingModule
from panoptic_ros.core.head.policies import REGISTRY
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.model import SingleShotPanoptic
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.taxonomy import default_model_config

pytestmark = [pytest.mark.pipeline,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')]
FRAME = Path(__file__).resolve().parents[1] / 'docs' / 'sim_frame_seed5.png'


def test_cuda_fp16_matches_cpu():
    torch.manual_seed(3)
    model = SingleShotPanoptic(default_model_config(input_size=(160, 128))).eval()
    x = torch.randn(1, 3, 128, 160)
    cpu = TorchBackend(copy.deepcopy(model))(x)
    for half in (False, True):
        out = TorchBackend(copy.deepcopy(model), 'cuda', half=half)(x.cuda().to(
            torch.float16 if half else torch.float32))
        for key in cpu:   # relative error (cuDNN runs fp32 convolutions in TF32)
            error = (out[key].float().cpu() - cpu[key]).norm() / cpu[key].norm()
            assert error < (2e-2 if half else 5e-3), (key, half, error.item())


def test_cuda_pipeline_matches_cpu():
    """The shipped model on a rendered 640 x 480 frame: the same detections (boxes within
    half a pixel) and at least 99.5 % of the panoptic labels equal."""
    rgb = np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(FRAME))[:480, :640],
                                            cv2.COLOR_BGR2RGB))
    model, _ = load_checkpoint(default_model_path())
    results = [FramePipeline(TorchBackend(copy.deepcopy(model), device))(rgb)
               for device in ('cpu', 'cuda')]
    cpu, cuda = results[0], results[1]
    assert cpu.network.boxes.shape[0] > 0, 'the frame should hold detections'
    assert torch.equal(cpu.network.classes, cuda.network.classes.cpu())
    assert torch.allclose(cpu.network.boxes, cuda.network.boxes.cpu(), atol=0.5)
    same = (cpu.panoptic.panoptic == cuda.panoptic.panoptic.cpu()).float().mean().item()
    assert same >= 0.995, same


def head_inputs(seed, h=60, w=80, n=30, classes=11, things=6):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([4.0 * w, 4.0 * h])
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 4 * min(h, w) * 0.4], 1)
    heatmap = torch.rand(1, h, w, generator=gen) * 0.05
    rows = torch.randint(0, h, (n,), generator=gen)
    cols = torch.randint(0, w, (n,), generator=gen)
    # distinct peaks: CPU and CUDA top-k may order equal values differently
    heatmap[0, rows, cols] = 0.5 + 0.5 * torch.rand(n, generator=gen)
    return dict(sem_logits=torch.randn(classes, h, w, generator=gen),
                center_offsets=torch.randn(2, h, w, generator=gen) * 8, boxes=boxes,
                scores=torch.rand(n, generator=gen),
                classes=torch.randint(classes - things, classes, (n,), generator=gen),
                valid=torch.rand(n, generator=gen) < 0.9, center_heatmap=heatmap,
                borderness_map=torch.rand(1, h, w, generator=gen))


@pytest.mark.parametrize('policy', POLICIES)
def test_cuda_graph_replay_equals_eager(policy):
    """Captured once, replayed on two other inputs copied into the captured buffers: the
    same panoptic image and segments as eager (CPU) on those inputs."""
    torch.manual_seed(0)
    is_thing = [False] * 5 + [True] * 6
    learned = {'spatial_ranking': lambda: SpatialRankingModule(6),
               'refined': lambda: MaskRefinement(6, 11)}.get(REGISTRY[policy].learned)
    module = learned() if learned else None
    heads = {device: PanopticHead(is_thing, PanopticHeadConfig(policy=policy), 'reference',
                                  copy.deepcopy(module)).to(device)
             for device in ('cpu', 'cuda')}
    static = {k: v.cuda() for k, v in head_inputs(0).items()}

    def run():
        with torch.inference_mode():
            return heads['cuda'](**static, image_size=(240, 320))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    for seed in (1, 2):
        inputs = head_inputs(seed)
        for key, value in inputs.items():
            static[key].copy_(value)
        graph.replay()
        with torch.inference_mode():
            expected = heads['cpu'](**inputs, image_size=(240, 320))
        assert torch.equal(captured.panoptic.cpu(), expected.panoptic), seed
        assert torch.equal(captured.area.cpu(), expected.area), seed
