"""Dataset export in COCO panoptic format (panoptic-ros-sim export), real renders.

Verifies: the CLI writes the documented layout; the same seed gives byte-identical labels and
annotations whatever the number of workers; every panoptic PNG decodes to ids that agree
with its segments_info (areas, boxes, categories) and labels every pixel once; extras (depth,
occupancy, camera) load back. Does not verify export throughput.
"""

import json

import cv2
import numpy as np
import pytest

from panoptic_ros.core.sim.coco import rgb_to_id
from panoptic_ros.core.sim.taxonomy import CLASSES
from panoptic_ros.core.sim.world import SimConfig
from panoptic_ros.sim_cli import main, sim_config

pytestmark = pytest.mark.pipeline

ARGS = ['--split', 'val', '--num', '4', '--seed', '7', '--width', '160', '--height', '120',
        '--no-progress']


def read(out):
    annotations = json.loads((out / 'annotations' / 'panoptic_val.json').read_text())
    labels = [(out / 'panoptic' / 'val' / a['file_name']).read_bytes()
              for a in annotations['annotations']]
    return annotations, labels


def test_export_layout_determinism_and_consistency(tmp_path, capsys):
    main(['export', '--out', str(tmp_path / 'a'), '--workers', '2', *ARGS])
    assert 'wrote 4 images of split val' in capsys.readouterr().out
    main(['export', '--out', str(tmp_path / 'b'), '--workers', '1', *ARGS])
    annotations, labels = read(tmp_path / 'a')
    assert (annotations, labels) == read(tmp_path / 'b')

    assert [c['id'] for c in annotations['categories']] == [c.id for c in CLASSES]
    assert len(annotations['images']) == 4
    for image, ann in zip(annotations['images'], annotations['annotations']):
        assert (tmp_path / 'a' / 'images' / 'val' / image['file_name']).is_file()
        bgr = cv2.imread(str(tmp_path / 'a' / 'panoptic' / 'val' / ann['file_name']))
        ids = rgb_to_id(bgr[..., ::-1])
        assert ids.shape == (120, 160) and (ids > 0).all()
        listed = {s['id']: s for s in ann['segments_info']}
        assert sorted(listed) == sorted(np.unique(ids).tolist())
        for segment_id, segment in listed.items():
            rows, cols = np.nonzero(ids == segment_id)
            assert segment['area'] == rows.size
            assert segment['bbox'] == [cols.min(), rows.min(), cols.max() + 1 - cols.min(),
                                       rows.max() + 1 - rows.min()]
            assert segment['category_id'] == segment_id // 1000 and segment['iscrowd'] == 0
        stem = ann['file_name'][:-4]
        extras = tmp_path / 'a' / 'extras' / 'val'
        depth = cv2.imread(str(extras / f'{stem}_depth.png'), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (120, 160) and depth.max() > 0
        occupancy = cv2.imread(str(extras / f'{stem}_occupancy.png'), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(occupancy).tolist()) <= {0, 1, 51, 101}
        meta = json.loads((extras / f'{stem}.json').read_text())
        assert meta['camera_info']['width'] == 160 and len(meta['camera_info']['k']) == 9
        assert np.asarray(meta['T_base_optical']).shape == (4, 4)


def test_preview_writes_picture(tmp_path, capsys):
    main(['preview', '--seed', '5', '--out', str(tmp_path / 'p.png')])
    picture = cv2.imread(str(tmp_path / 'p.png'))
    assert picture.shape == (480, 2 * 640 + 480, 3)
    assert 'road:1000' in capsys.readouterr().out


def test_set_overrides_the_sim_config_and_is_recorded(tmp_path, capsys):
    config = sim_config(320, 240, ['camera_height=[0.3, 0.6]', 'crowd_probability=1.0'])
    assert (config.width, config.height) == (320, 240)
    assert config.camera_height == (0.3, 0.6) and config.crowd_probability == 1.0
    assert config.camera_pitch_deg == SimConfig().camera_pitch_deg
    for bad in (['camera_hieght=[0, 1]'], ['crowd_probability']):
        with pytest.raises(ValueError, match='FIELD=VALUE'):
            sim_config(320, 240, bad)
    with pytest.raises(SystemExit):
        main(['export', '--out', str(tmp_path / 'x'), *ARGS, '--set', 'nope=1'])
    main(['export', '--out', str(tmp_path / 'c'), *ARGS, '--set', 'camera_pitch_deg=[0, 5]',
          '--workers', '1'])
    annotations, _ = read(tmp_path / 'c')
    assert annotations['info']['sim_config']['camera_pitch_deg'] == [0, 5]
    assert annotations['info']['sim_config']['width'] == 160
