"""Program entry points of the nodes: console scripts and the `ros2 run` wrappers.

A node module takes seconds to import (torch, rclpy). Each entry point imports its module
inside the call, so that Ctrl-C at any moment of start-up, the imports included, ends the
program quietly with exit code 0 instead of a KeyboardInterrupt traceback.
"""

import importlib
import sys

NODES = ('panoptic_node', 'camera_node', 'sim_camera_node')


def run(node, args=None):
    """main() of panoptic_ros.ros.<node>; its exit code, 0 after Ctrl-C."""
    try:
        return importlib.import_module(f'panoptic_ros.ros.{node}').main(args)
    except KeyboardInterrupt:
        return 0


def panoptic_node():
    return run('panoptic_node')


def camera_node():
    return run('camera_node')


def sim_camera_node():
    return run('sim_camera_node')


if __name__ == '__main__':   # python -m panoptic_ros.ros.entry_points NODE [--ros-args ...]
    sys.exit(run(sys.argv[1], sys.argv[1:]))
