"""Shared fixtures: an isolated ROS 2 environment per test run and a process launcher.

Every test module declares its tier (``pytestmark = pytest.mark.pure | pipeline | ros``, see
setup.cfg): ``pytest -m pure`` is the quick loop, ``make test`` runs all three tiers.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id

TEST_DIR = Path(__file__).resolve().parent
PROCS = TEST_DIR / 'procs'
TIERS = ('pure', 'pipeline', 'ros')


def pytest_collection_modifyitems(config, items):
    """Refuse a test without exactly one tier."""
    untiered = [item.nodeid for item in items
                if sum(item.get_closest_marker(tier) is not None for tier in TIERS) != 1]
    if untiered:
        raise pytest.UsageError(f'tests need exactly one tier marker {TIERS}: {untiered[:5]}')


@pytest.fixture(scope='session')
def model_path(tmp_path_factory):
    """An untrained checkpoint of the light architecture (seed 0) for node tests."""
    import torch
    from panoptic_ros.core.checkpoint import save_checkpoint
    from panoptic_ros.core.model import SingleShotPanoptic
    from panoptic_ros.core.sim.taxonomy import default_model_config
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('model') / 'dev.safetensors'
    save_checkpoint(path, SingleShotPanoptic(default_model_config()))
    return path


@pytest.fixture(scope='session')
def ros_domain_id():
    """One ROS_DOMAIN_ID for this whole pytest run, chosen at random."""
    return pick_domain_id()


@pytest.fixture
def ros_env(ros_domain_id, tmp_path):
    """Environment for child processes: this run's domain, localhost discovery, DDS profile."""
    return isolated_ros_env(ros_domain_id, tmp_path / 'ros_home')


@pytest.fixture
def start_proc():
    """Start `python test/procs/NAME ARGS...` with an environment; kills leftovers at teardown."""
    started = []

    def start(name, *args, env):
        proc = subprocess.Popen([sys.executable, str(PROCS / name), *map(str, args)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
