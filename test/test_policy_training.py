"""Training the learned overlap policies' parts (panoptic-ros-train-policy), real renders.

Verifies: on a few rendered frames with the shipped light model the command trains OANet's
spatial ranking module and the INRIA refinement networks, writes them next to the model with
their record (data, frames, per-class selection), and the files load back into a pipeline
whose head runs the policy; a file for other classes, or of the other policy, is refused
naming the problem. Does not verify that the trained parts help (benchmarks/bench_policies.py
measures that).
"""

import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from panoptic_ros.core.backends import make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.head import learned, PanopticHeadConfig
from panoptic_ros.core.inference import FramePipeline
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.policy_train_cli import main as train_policy
from panoptic_ros.sim_cli import main as sim

pytestmark = pytest.mark.pipeline


def test_train_both_learned_parts_and_use_them(tmp_path, capsys):
    data = tmp_path / 'data'
    sim(['export', '--out', str(data), '--split', 'train', '--num', '3', '--seed', '11',
         '--width', '320', '--height', '240', '--no-progress', '--set', 'crowd_probability=1'])
    model = tmp_path / 'light.safetensors'
    shutil.copy(default_model_path(), model)
    for policy in ('spatial_ranking', 'refined'):
        try:
            train_policy(['--model', str(model), '--policy', policy, '--data', str(data),
                          '--split', 'train', '--select-split', 'train', '--epochs', '2',
                          '--score-threshold', '0.2', '--input-size', '384', '288'])
        except SystemExit as stop:   # too few conflicts in 3 frames is a clear stop
            assert 'nothing to train on' in str(stop)
            continue
        path = learned.weights_path(model, policy)
        assert path.name == f'light.{policy}.safetensors' and path.is_file()
        with safe_open(str(path), framework='pt') as f:
            info = json.loads(f.metadata()['panoptic_ros'])['info']
        assert info['frames'] == 3 and info['data'] == [f'{data}/train']
        assert info['input_size'] == [384, 288]   # the outputs it learned from
        if policy == 'refined':
            assert set(info['selection']) == {'car', 'robot', 'droid', 'duck', 'teddy',
                                              'table'}
        net, _ = load_checkpoint(model)
        pipeline = FramePipeline(make_backend('torch', net, 'cpu'),
                                 head_config=PanopticHeadConfig(policy=policy),
                                 learned=learned.loader_for(model, net.config.classes))
        assert pipeline.head.learned is not None
        out = pipeline(np.zeros((240, 320, 3), np.uint8)).panoptic
        assert out.panoptic.shape == (240, 320)
    assert 'wrote' in capsys.readouterr().out
    # Wrong policy or wrong classes: refused with the reason.
    trained = next(p for p in ('refined', 'spatial_ranking')
                   if learned.weights_path(model, p).is_file())
    other = 'spatial_ranking' if trained == 'refined' else 'refined'
    with pytest.raises(ValueError, match=f'holds {trained!r} weights'):
        learned.load_policy_weights(learned.weights_path(model, trained), other)
    with pytest.raises(ValueError, match='trained for the classes'):
        learned.load_policy_weights(learned.weights_path(model, trained), trained, ['a', 'b'])
    with pytest.raises(ValueError, match='do not exist: train them'):
        learned.load_policy_weights(tmp_path / 'missing.safetensors', 'refined')
