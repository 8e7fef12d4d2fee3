"""Several cameras without ROS: the batched network, the fused grid, the accumulated map, the
robot's poses and the simulator's rig.

Verifies: a batch-1 ONNX rebatched to B gives each image exactly its batch-1 outputs (fp32
exports of the light and of the every-branch architecture, and the shipped INT8 file), a
graph that folds its batch is refused; FramePipeline.network_stage_batch equals
network_stage image by image (torch, and onnxruntime with a padded batch); both fusion rules
on hand-made grids; the accumulated map: a known translation of the robot moves a known
obstacle by the same number of cells in the base frame and keeps it in place in the odometry
frame, an obstacle nobody sees any more falls below occupied after `memory` seconds (not
before), one that drives away while in view is cleared by the next free observations, ground
keeps its cost; PoseHistory interpolation and its refusals; a rendered rig reads back with
its cameras, odometry and per-camera ground truth, fused truth and SeenSoFar. Does not
verify the node (test_multicamera_node) nor speed (benchmarks/bench_multicamera_ros.py).
"""

import copy
import math

import numpy as np
import pytest
import torch

from panoptic_ros.core.backends import export_onnx, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.model import SingleShotPanoptic
from panoptic_ros.core.occupancy import GridConfig
from panoptic_ros.core.occupancy.accumulated import AccumulatedMap, MapConfig, PoseHistory
from panoptic_ros.core.occupancy.fusion import fuse
from panoptic_ros.core.onnx_batch import rebatch_model, rebatched_path
from panoptic_ros.core.quantization import int8_path
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.taxonomy import default_model_config

pytestmark = pytest.mark.pipeline
EVERY_BRANCH = dict(encoder='efficientnet_lite0', center_heatmap=True, ppm=True,
                    box_head='lpsnet', borderness_map=True)


def run_onnx(path, x):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {'image': x})


@pytest.mark.parametrize('variant', ['light', 'every_branch', 'shipped_int8'])
def test_rebatched_onnx_gives_each_image_its_batch_one_outputs(variant, tmp_path):
    if variant == 'shipped_int8':
        source = int8_path(default_model_path())
        width, height = 320, 240
    else:
        torch.manual_seed(3)
        config = default_model_config(input_size=(160, 128),
                                      **(EVERY_BRANCH if variant == 'every_branch' else {}))
        model = SingleShotPanoptic(config).eval()
        if config.ppm:   # a trained module, not the zero-initialised identity
            torch.nn.init.normal_(model.backbone.body.ppm.project.weight, std=0.05)
        source = export_onnx(model, tmp_path / 'm.onnx')
        width, height = config.input_size
    batched = rebatched_path(source, 3, tmp_path)
    assert rebatched_path(source, 3, tmp_path) == batched and \
        rebatched_path(source, 1, tmp_path) == source
    x = np.random.default_rng(0).normal(size=(3, 3, height, width)).astype(np.float32)
    together = run_onnx(batched, x)
    for k in range(3):
        alone = run_onnx(source, x[k:k + 1])
        for a, b in zip(together, alone):
            assert a.shape[0] == 3 and np.array_equal(a[k], b[0])


def test_a_graph_that_folds_its_batch_is_refused():
    import onnx
    from onnx import helper, TensorProto
    shape = helper.make_tensor('shape', TensorProto.INT64, [1], [6])
    graph = helper.make_graph(
        [helper.make_node('Reshape', ['image', 'shape'], ['flat'])], 'fold',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info('flat', TensorProto.FLOAT, [6])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    onnx.checker.check_model(model)
    with pytest.raises(ValueError, match='no static leading batch'):
        rebatch_model(model, 2)


def test_network_stage_batch_equals_each_image_alone(tmp_path):
    model, _ = load_checkpoint(default_model_path())
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (480, 640, 3), np.uint8),
              rng.integers(0, 255, (360, 640, 3), np.uint8)]   # another size, same network

    def pipeline(name, batch):
        return FramePipeline(make_backend(name, copy.deepcopy(model), cache_dir=tmp_path,
                                          batch=batch))
    onnx_pipeline = pipeline('onnxruntime', 3)
    assert onnx_pipeline.backend.batch == 3   # two images padded to the static batch
    for batched_pipeline, single in ((pipeline('torch', 2), pipeline('torch', 1)),
                                     (onnx_pipeline, pipeline('onnxruntime', 1))):
        batched = batched_pipeline.network_stage_batch(images)
        assert len(batched) == 2 and all('network' in timer.seconds for _, timer in batched)
        for rgb, (net, _) in zip(images, batched):
            alone, _ = single.network_stage(rgb)
            assert net.image_size == alone.image_size == rgb.shape[:2]
            assert torch.allclose(net.sem_logits, alone.sem_logits, atol=1e-4)
            assert torch.allclose(net.boxes, alone.boxes, atol=1e-3) and \
                torch.equal(net.classes, alone.classes)
    with pytest.raises(ValueError, match='batch 3'):
        onnx_pipeline.network_stage_batch(images * 2)


def test_fusion_rules_on_hand_made_grids():
    grid = GridConfig(resolution=1.0, width=4, height=1, origin_x=0.0, origin_y=-0.5)
    a = np.array([[0, 100, -1, 50]], np.int8)    # camera at x = 0
    b = np.array([[100, 0, 0, -1]], np.int8)     # camera at x = 4
    assert fuse([a, b], 'occupied_wins').tolist() == [[100, 100, 0, 50]]
    nearest = fuse([a, b], 'nearest_camera', [(0.0, 0.0), (4.0, 0.0)], grid)
    assert nearest.tolist() == [[0, 100, 0, 50]]   # cells 0, 1 nearer a; 2 only b; 3 only a
    assert fuse([a], 'nearest_camera').tolist() == a.tolist()
    with pytest.raises(ValueError, match='not one of'):
        fuse([a, b], 'loudest')


GRID = GridConfig(resolution=0.1, width=60, height=60, origin_x=0.0, origin_y=-3.0)


def obstacle_grid(x0, y0, size=3):
    """A camera grid seeing ground everywhere and an obstacle at (x0, y0) (base frame)."""
    values = np.zeros((GRID.height, GRID.width), np.int8)
    j, i = round((x0 - GRID.origin_x) / 0.1), round((y0 - GRID.origin_y) / 0.1)
    values[i:i + size, j:j + size] = 100
    return values


def occupied_in_odom(world_map):
    i, j = np.nonzero(world_map.values() == 100)
    ox, oy = world_map.origin_xy
    return set(zip(np.round(ox / 0.1 + j).astype(int).tolist(),
                   np.round(oy / 0.1 + i).astype(int).tolist()))


def test_accumulated_map_moves_with_odometry_and_keeps_obstacles_in_place():
    config = MapConfig(width=100, height=100, memory=5.0)
    first, second = AccumulatedMap(config), AccumulatedMap(config)
    for k in range(5):   # the robot at x = 0 sees an obstacle 2 m ahead, 1.5 m to the left
        first.update(obstacle_grid(2.0, 1.5), GRID, (0.0, 0.0, 0.0), 0.1 * k)
    for k in range(5):   # at x = 1.2 it sees the same obstacle 0.8 m ahead
        second.update(obstacle_grid(0.8, 1.5), GRID, (1.2, 0.0, 0.0), 0.1 * k)
    assert len(occupied_in_odom(first)) == 9
    assert occupied_in_odom(first) == occupied_in_odom(second)
    # a robot at (0.5, -1.0) facing +y (yaw 90 degrees) sees the first obstacle 2.6 m ahead
    # and 1.65 m to its right: the same cells in the odometry frame
    turned = AccumulatedMap(config)
    for k in range(5):
        turned.update(obstacle_grid(2.5, -1.8), GRID, (0.5, -1.0, math.pi / 2), 0.1 * k)
    assert occupied_in_odom(turned) == occupied_in_odom(first)


def test_accumulated_map_decays_as_configured_and_clears_what_drives_away():
    config = MapConfig(width=100, height=100, memory=4.0)
    world_map = AccumulatedMap(config)
    for k in range(30):   # saturated
        world_map.update(obstacle_grid(3.0, 0.0), GRID, (0.0, 0.0, 0.0), 0.1 * k)
    seen_until = 2.9
    unseen = np.full((GRID.height, GRID.width), -1, np.int8)   # the camera looks away
    world_map.update(unseen, GRID, (0.0, 0.0, 0.0), seen_until + config.memory - 0.05)
    assert len(occupied_in_odom(world_map)) == 9   # still on the map just before `memory`
    world_map.update(unseen, GRID, (0.0, 0.0, 0.0), seen_until + config.memory + 0.05)
    assert not occupied_in_odom(world_map)         # and below occupied just after
    assert (world_map.values() == -1).all()        # the ground seen then has faded as well
    # a car that drives away while in view: free evidence clears it within a few frames
    moving = AccumulatedMap(config)
    for k in range(30):
        moving.update(obstacle_grid(3.0, 0.0), GRID, (0.0, 0.0, 0.0), 0.1 * k)
    empty = np.zeros((GRID.height, GRID.width), np.int8)
    cleared_after = None
    for k in range(30):
        moving.update(empty, GRID, (0.0, 0.0, 0.0), 3.0 + 0.1 * k)
        if not occupied_in_odom(moving):
            cleared_after = k + 1
            break
    assert cleared_after is not None and cleared_after <= 10
    # ground keeps the cost it was seen with
    grass = np.full((GRID.height, GRID.width), 50, np.int8)
    costly = AccumulatedMap(config)
    for k in range(3):
        costly.update(grass, GRID, (0.0, 0.0, 0.0), 0.1 * k)
    assert set(np.unique(costly.values()).tolist()) == {-1, 50}


def test_pose_history_interpolates_and_refuses_what_it_cannot_know():
    poses = PoseHistory(keep=10.0, tolerance=0.1)
    with pytest.raises(LookupError, match='no odometry'):
        poses.at(1.0)
    poses.add(1.0, 0.0, 0.0, math.pi - 0.1)
    poses.add(2.0, 1.0, 2.0, -math.pi + 0.1)   # turning through +-pi
    x, y, yaw = poses.at(1.5)
    assert (x, y) == pytest.approx((0.5, 1.0)) and abs(abs(yaw) - math.pi) < 1e-9
    assert poses.at(2.05) == (1.0, 2.0, -math.pi + 0.1)   # within the tolerance
    with pytest.raises(LookupError, match='older than the image'):
        poses.at(2.2)
    with pytest.raises(LookupError, match='older than the oldest'):
        poses.at(0.5)


def test_rendered_rig_reads_back_with_its_ground_truth(tmp_path):
    import dataclasses
    from panoptic_ros.core.sim.rig import (fused_truth, render_rig_sequence, RigSequence,
                                           SeenSoFar, SURROUND, SURROUND_SCENE)
    scene = dataclasses.replace(SURROUND_SCENE, width=160, height=120)
    render_rig_sequence(tmp_path / 'rig', 11, 3, SURROUND[:2], fps=5.0, speed=1.0,
                        config=scene)
    rig = RigSequence(tmp_path / 'rig')
    assert [c.name for c in rig.cameras] == ['front', 'left'] and len(rig) == 3
    assert rig.odometry[:, 0].tolist() == [0.0, 0.2, 0.4]
    assert np.hypot(*(rig.odometry[2, 1:3] - rig.odometry[0, 1:3])) == pytest.approx(0.4)
    for cam in rig.cameras:
        sequence = rig.sequences[cam.name]
        assert np.allclose(sequence.T_base_optical, cam.T_base_optical)
        assert sequence[0]['rgb'].shape == (120, 160, 3)
    grids = [rig.sequences[c.name][1]['occupancy'] for c in rig.cameras]
    fused = fused_truth(grids)
    assert ((fused >= 0) == ((grids[0] >= 0) | (grids[1] >= 0))).all()
    seen = SeenSoFar(GridConfig(resolution=0.1, width=300, height=300, origin_x=-15.0,
                                origin_y=-15.0))
    seen.add(fused, rig.grid, tuple(rig.odometry[1, 1:]))
    assert (seen.values >= 0).sum() > 0.2 * (fused >= 0).sum()
