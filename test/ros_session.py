"""rclpy inside a test process: the test's own node on an isolated ROS environment."""

import contextlib
import os
import time


@contextlib.contextmanager
def rclpy_node(env, name):
    """Initialise rclpy with `env` (from the ros_env fixture) applied to this process, yield
    one node, and undo both (node, rclpy, environment) afterwards."""
    import rclpy
    saved = dict(os.environ)
    os.environ.update(env)
    rclpy.init()
    node = rclpy.create_node(name)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def spin_until(node, done, timeout):
    """Spin `node` until done() is true or `timeout` seconds pass; returns done()."""
    import rclpy
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.02)
    return done()
