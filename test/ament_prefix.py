"""Build this package into an install prefix the way colcon builds an ament_cmake package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def build_install_prefix(tmp_path):
    """cmake configure, build and install the tracked sources into tmp_path/install.

    The sources are copied out of the tree first: the venv inside the repository would
    otherwise be a path "prefixed in the source directory" for CMake. Returns the install
    prefix; an assertion error carries cmake's output when a step fails.
    """
    src = tmp_path / 'src' / 'panoptic_ros'
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build, install = tmp_path / 'build', tmp_path / 'install'
    env = dict(os.environ, AMENT_PREFIX_PATH=_prefix_path(VENV),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ["PATH"]}')
    for cmd in (['cmake', '-S', str(src), '-B', str(build), f'-DCMAKE_INSTALL_PREFIX={install}',
                 f'-DCMAKE_PREFIX_PATH={VENV}', f'-DPython3_EXECUTABLE={sys.executable}',
                 '-DBUILD_TESTING=OFF'],
                ['cmake', '--build', str(build), '-j', str(os.cpu_count() or 1)],
                ['cmake', '--install', str(build)]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f'{cmd[:2]} failed:\n{result.stdout[-3000:]}\n' \
                                       f'{result.stderr[-3000:]}'
    return install


def prefix_env(install, base):
    """`base` with the install prefix first on the Python, ament and loader paths (what
    sourcing the prefix's local_setup does)."""
    site = next(install.glob('lib/python3*/site-packages'))
    return dict(base,
                PYTHONPATH=os.pathsep.join(filter(None, [str(site), base.get('PYTHONPATH')])),
                AMENT_PREFIX_PATH=_prefix_path(install, base.get('AMENT_PREFIX_PATH')),
                LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(install / 'lib'),
                                                              base.get('LD_LIBRARY_PATH')])),
                PATH=f'{VENV / "bin"}{os.pathsep}{base.get("PATH", os.defpath)}')


def _prefix_path(first, rest=None):
    """`first`, then the venv, then `rest` (an AMENT_PREFIX_PATH value), without repeats."""
    parts = [str(first), str(VENV)] + (rest.split(os.pathsep) if rest else [])
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))
