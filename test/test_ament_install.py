"""The ament_cmake install path that colcon takes on a system ROS 2 install.

Verifies: CMakeLists.txt configures, builds and installs the package (messages + Python sources
+ config) into a fresh prefix, the way `colcon build` runs an ament_cmake package, and that
`panoptic_ros.msg` and `panoptic_ros.ros` import from that prefix as one package.
Does not verify: colcon itself, or a system ROS (neither exists here); the prefix paths come
from the ROS 2 Kilted wheels in .venv.
"""

import os
import shutil
import subprocess
import sys

import pytest

from ament_prefix import build_install_prefix, prefix_env

pytestmark = pytest.mark.ros


@pytest.mark.skipif(shutil.which('cmake') is None, reason='cmake not installed')
def test_cmake_install_merges_messages_and_sources(tmp_path):
    install = build_install_prefix(tmp_path)

    share = install / 'share' / 'panoptic_ros'
    for name in ('package.xml', 'config/fastdds_localhost.xml', 'config/panoptic.yaml',
                 'config/panoptic.rviz', 'launch/camera.launch.py',
                 'models/panoptic_branches_sim.safetensors',
                 'models/panoptic_branches_sim.int8.onnx',
                 'models/panoptic_branches_sim.384x288.int8.onnx',
                 'models/panoptic_light_sim.safetensors'):
        assert (share / name).is_file(), name
    assert not (share / 'models' / 'stages').exists()
    for name in ('sim_camera_node', 'camera_node', 'panoptic_node'):
        node = install / 'lib' / 'panoptic_ros' / name
        assert node.is_file() and os.access(node, os.X_OK), name
    site = next(install.glob('lib/python3*/site-packages'))
    assert (site / 'panoptic_ros' / 'ros' / 'image_codec.py').is_file()
    code = ('import panoptic_ros, panoptic_ros.ros.image_codec\n'
            'from panoptic_ros.msg import PanopticSegmentation\n'
            'print(panoptic_ros.__file__)\n')
    result = subprocess.run([sys.executable, '-c', code], env=prefix_env(install, os.environ),
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site))
