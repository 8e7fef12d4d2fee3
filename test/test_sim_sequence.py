"""Driving sequences (panoptic-ros-sim sequence, core/sim/sequence.py): real renders.

Verifies: the folder layout and metadata (stamps at 1/fps, the robot advancing at the given
speed along a fixed heading, one camera for the whole sequence), replay through Sequence
returns images, panoptic ids agreeing with the stored segments and occupancy grids, the
ground truth changes as the robot moves, and the same seed renders the same files.
Does not verify the ROS replay node (test_sim_camera_node does).
"""

import numpy as np
import pytest

from panoptic_ros.core.sim.sequence import render_sequence, Sequence
from panoptic_ros.core.sim.world import SimConfig

pytestmark = pytest.mark.pipeline

CONFIG = SimConfig(width=160, height=120)


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp('seq')
    render_sequence(root, seed=4, frames=5, fps=5.0, speed=2.0, config=CONFIG)
    return Sequence(root)


def test_metadata_and_motion(sequence):
    assert len(sequence) == 5 and sequence.fps == 5.0
    stamps = [sequence[i]['stamp'] for i in range(5)]
    assert stamps == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    positions = np.array([sequence[i]['T_world_base'][:2, 3] for i in range(5)])
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert steps == pytest.approx([0.4] * 4)                   # 2 m/s x 0.2 s
    first, last = positions[1] - positions[0], positions[-1] - positions[0]
    assert abs(first[0] * last[1] - first[1] * last[0]) < 1e-9        # one straight line
    assert sequence.camera_info['width'] == 160 and sequence.T_base_optical.shape == (4, 4)


def test_replay_matches_stored_ground_truth(sequence):
    grids = []
    for i in range(len(sequence)):
        frame = sequence[i]
        assert frame['rgb'].shape == (120, 160, 3) and frame['rgb'].dtype == np.uint8
        ids, counts = np.unique(frame['panoptic'], return_counts=True)
        assert {s['id']: s['area'] for s in frame['segments']} == \
            dict(zip(ids.tolist(), counts.tolist()))
        assert set(np.unique(frame['occupancy']).tolist()) <= {-1, 0, 50, 100}
        grids.append(frame['occupancy'])
    assert not np.array_equal(grids[0], grids[-1])             # the world moved past


def test_same_seed_same_sequence(sequence, tmp_path):
    render_sequence(tmp_path, seed=4, frames=2, fps=5.0, speed=2.0, config=CONFIG)
    again = Sequence(tmp_path)
    for i in range(2):
        assert np.array_equal(again[i]['panoptic'], sequence[i]['panoptic'])
        assert np.array_equal(again[i]['occupancy'], sequence[i]['occupancy'])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a rendered sequence'):
        Sequence(tmp_path)
