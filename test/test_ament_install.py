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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.mark.skipif(shutil.which('cmake') is None, reason='cmake not installed')
def test_cmake_install_merges_messages_and_sources(tmp_path):
    # Copy the tracked sources out of the tree: the venv inside the repository would otherwise
    # be a path "prefixed in the source directory" for CMake.
    src = tmp_path / 'src' / 'panoptic_ros'
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build, install = tmp_path / 'build', tmp_path / 'install'
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ["PATH"]}')
    for cmd in (['cmake', '-S', str(src), '-B', str(build), f'-DCMAKE_INSTALL_PREFIX={install}',
                 f'-DCMAKE_PREFIX_PATH={VENV}', f'-DPython3_EXECUTABLE={sys.executable}',
                 '-DBUILD_TESTING=OFF'],
                ['cmake', '--build', str(build), '-j', str(os.cpu_count() or 1)],
                ['cmake', '--install', str(build)]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f'{cmd[:2]} failed:\n{result.stdout[-3000:]}\n' \
                                       f'{result.stderr[-3000:]}'

    share = install / 'share' / 'panoptic_ros'
    assert (share / 'config' / 'fastdds_localhost.xml').is_file()
    assert (share / 'package.xml').is_file()
    node = install / 'lib' / 'panoptic_ros' / 'sim_camera_node'
    assert node.is_file() and os.access(node, os.X_OK)
    site = next(install.glob('lib/python3*/site-packages'))
    assert (site / 'panoptic_ros' / 'ros' / 'image_codec.py').is_file()
    code = ('import panoptic_ros, panoptic_ros.ros.image_codec\n'
            'from panoptic_ros.msg import PanopticSegmentation\n'
            'print(panoptic_ros.__file__)\n')
    run_env = dict(env, PYTHONPATH=str(site), AMENT_PREFIX_PATH=f'{install}{os.pathsep}{VENV}',
                   LD_LIBRARY_PATH=f'{install / "lib"}{os.pathsep}'
                                   f'{os.environ.get("LD_LIBRARY_PATH", "")}')
    result = subprocess.run([sys.executable, '-c', code], env=run_env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site))
