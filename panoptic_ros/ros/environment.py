"""Process environment for ROS 2 on one machine: DDS profile, discovery range, domain id.

Tests, benchmarks and the demo start the node and its peers as separate processes; each run
gets its own ROS_DOMAIN_ID so that concurrent runs (and anything else on the machine) cannot
see each other, localhost-only discovery, the shipped Fast DDS profile (32 MB shared-memory
segment: with Fast DDS's default, camera-size best-effort images are silently lost), and a
ROS_HOME for logs inside the given directory. No rclpy import: this only builds a dict.
"""

import os
from pathlib import Path
import random

# Domain ids 1..101 map to valid UDP ports with the default port mapping (0 is the default
# domain that stray nodes use, so it is never picked).
DOMAIN_ID_RANGE = (1, 101)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def fastdds_profile_path():
    """Path of config/fastdds_localhost.xml, in the source tree or the installed share dir."""
    source = _PACKAGE_ROOT / 'config' / 'fastdds_localhost.xml'
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory('panoptic_ros')) / 'config' / \
            'fastdds_localhost.xml'
    except (ImportError, LookupError, OSError, ValueError) as error:
        raise FileNotFoundError(f'fastdds_localhost.xml not in {source.parent} and the '
                                f'installed share directory is unknown ({error})') from error
    if installed.is_file():
        return installed
    raise FileNotFoundError(f'fastdds_localhost.xml not in {source.parent} nor {installed.parent}')


def pick_domain_id(exclude=()):
    """A domain id from DOMAIN_ID_RANGE, chosen at random, never one of `exclude`."""
    choices = [d for d in range(DOMAIN_ID_RANGE[0], DOMAIN_ID_RANGE[1] + 1) if d not in exclude]
    return random.SystemRandom().choice(choices)


def isolated_ros_env(domain_id, ros_home, base=None):
    """Environment variables for a ROS 2 process isolated on this machine.

    Args:
        domain_id: ROS_DOMAIN_ID for the process (int).
        ros_home: directory for ROS_HOME (logs); created if missing.
        base: environment to start from (default: os.environ).
    Returns:
        dict suitable for subprocess.Popen(env=...).
    """
    env = dict(os.environ if base is None else base)
    Path(ros_home).mkdir(parents=True, exist_ok=True)
    env.update({
        'ROS_DOMAIN_ID': str(int(domain_id)),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'FASTDDS_DEFAULT_PROFILES_FILE': str(fastdds_profile_path()),
        'ROS_HOME': str(ros_home),
        'ROS_LOG_DIR': str(Path(ros_home) / 'log'),
        'PYTHONUNBUFFERED': '1',
    })
    env.pop('ROS_LOCALHOST_ONLY', None)  # deprecated, and still multicasts on eth0 here
    return env
