"""The parameter table (panoptic_ros.core.settings.PARAMETERS) and what is written from it.

Verifies: config/panoptic.yaml sets exactly the parameters with their defaults; bad values of
each kind are refused with the parameter named; README.md's parameter table is the one
generated from the Specs. Does not verify the ROS descriptors (test_panoptic_node).
"""

import importlib.util
from pathlib import Path

import pytest
import yaml

from panoptic_ros.core.settings import PARAMETERS, Settings

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]


def test_settings_validation_and_yaml_agree():
    data = yaml.safe_load((ROOT / 'config' / 'panoptic.yaml').read_text())
    params = data['panoptic_node']['ros__parameters']
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        default = PARAMETERS[name].default
        assert value == (pytest.approx(default) if isinstance(default, float) else default)
    assert Settings.from_params(params).input_size == (384, 288)
    assert Settings.from_params({'input_size': [0, 0]}).input_size is None   # the model's own
    assert Settings.from_params({'input_size': [448, 336]}).input_size == (448, 336)
    assert Settings.from_params({'cross_class_iou': 1.0}).decode.cross_class_iou == 1.0
    for name, value in (('backend', 'tensorflow'), ('score_threshold', 1.5),
                        ('grid_resolution', 0.0), ('camera_xyz', [0.0, 0.0, -1.0]),
                        ('outputs', ['panoptic', 'everything']), ('ground_cost', 100),
                        ('image_reliability', 'sometimes'), ('max_detections', 0),
                        ('footprint_priors', [1.0, 0.5, 0.0]), ('footprint_scale', 0.0),
                        ('footprint_classes', ['road', 'car']), ('input_size', [448, 330]),
                        ('input_size', [440, 336]), ('input_size', [448]),
                        ('input_size', [0, 16]), ('cross_class_iou', 0.0),
                        ('cross_class_iou', 1.5)):
        with pytest.raises(ValueError, match=f'{name}='):
            Settings.from_params({name: value})
    with pytest.raises(ValueError, match="footprint_priors=.*'car'.*width <= length"):
        Settings.from_params({'footprint_classes': ['car'],
                              'footprint_priors': [0.5, 1.0, 0.0, 0.0]})
    for params in ({'free_classes': ['asphalt']}, {'footprint_classes': ['bus'],
                                                   'footprint_priors': [9, 2.5, 1, 3]}):
        with pytest.raises(ValueError, match='not classes of the model'):
            Settings.from_params(params).occupancy_config(['road', 'car'], 1000)


def test_readme_parameter_table_is_generated_from_the_specs():
    spec = importlib.util.spec_from_file_location(
        'update_readme_parameters', ROOT / 'scripts' / 'update_readme_parameters.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (ROOT / 'README.md').read_text()
    assert script.with_table(readme) == readme, \
        'README.md parameter table is stale: run scripts/update_readme_parameters.py'
    for name in PARAMETERS:
        assert f'| `{name}` |' in readme


def test_cameras_and_their_extrinsics():
    """One set of fallback extrinsics serves every camera, or three numbers per camera;
    config/surround.yaml with the rig's camera names gives the rig's camera poses."""
    import numpy as np
    from panoptic_ros.core.settings import load_yaml_params
    from panoptic_ros.core.sim.rig import SURROUND
    two = Settings.from_params({'cameras': ['front', 'rear']})
    assert two.cameras == ('front', 'rear') and len(two.T_base_optical) == 2
    assert np.array_equal(two.T_base_optical[0], two.T_base_optical[1])
    surround = Settings.from_params({**load_yaml_params(ROOT / 'config' / 'surround.yaml'),
                                     'cameras': [c.name for c in SURROUND]})
    for T, camera in zip(surround.T_base_optical, SURROUND):
        assert np.allclose(T, camera.T_base_optical, atol=1e-5)
    for params, match in (({'cameras': []}, 'at least one camera'),
                          ({'cameras': ['front', 'front']}, 'no name twice'),
                          ({'cameras': ['', 'left']}, 'cannot be combined'),
                          ({'cameras': ['front cam']}, 'not a topic namespace'),
                          ({'cameras': ['a', 'b'], 'camera_xyz': [0.0] * 9}, 'three per'),
                          ({'fusion_rule': 'loudest'}, 'fusion_rule='),
                          ({'map_memory': 0.0}, 'map_memory=')):
        with pytest.raises(ValueError, match=match):
            Settings.from_params(params)
