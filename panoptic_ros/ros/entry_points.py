"""Program entry points of the nodes: console scripts and the `ros2 run` wrappers.

A node module takes seconds to import (torch, rclpy). Each entry point imports its module
inside the call, with SIGINT only noted meanwhile, so that Ctrl-C at any moment of start-up,
the imports included, ends the program quietly with exit code 0 instead of a
KeyboardInterrupt traceback (or an abort from inside an extension's initialisation).
"""

import importlib
import signal
import sys

NODES = ('panoptic_node', 'camera_node', 'sim_camera_node')


def run(node, args=None):
    """main() of panoptic_ros.ros.<node>; its exit code, 0 after Ctrl-C."""
    try:
        module = _import_without_interrupts(f'panoptic_ros.ros.{node}')
        return 0 if module is None else module.main(args)
    except KeyboardInterrupt:
        return 0


def _import_without_interrupts(name):
    """The module, or None after a Ctrl-C during its import. While it imports, SIGINT is only
    noted: raised as KeyboardInterrupt inside an extension's initialisation (torch and
    others run Python from C++ there) it can abort the process instead of unwinding."""
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        module = importlib.import_module(name)
    finally:
        signal.signal(signal.SIGINT, previous)
    return None if interrupted else module


def panoptic_node():
    return run('panoptic_node')


def camera_node():
    return run('camera_node')


def sim_camera_node():
    return run('sim_camera_node')


if __name__ == '__main__':   # python -m panoptic_ros.ros.entry_points NODE [--ros-args ...]
    sys.exit(run(sys.argv[1], sys.argv[1:]))
