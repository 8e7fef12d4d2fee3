"""The one main() of this package's nodes, and the camera nodes' wait for subscribers.

`run_node` creates the node, spins it until Ctrl-C / SIGTERM or until the node sets its
`finished` flag (a camera at the end of a file without looping), and always destroys the
node and shuts rclpy down. Start-up errors (bad parameters, and the node's own start-up
exceptions) print one line naming the program and exit with code 2; any other start-up
fault prints its type and message and exits with 1.
"""

import sys
import time

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def run_node(node_class, prog, args=None, start_errors=()):
    """main() of a node class; returns the exit code."""
    rclpy.init(args=args)
    node, code = None, 0
    try:
        node = node_class()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, 'finished', False):
            executor.spin_once(timeout_sec=0.1)
    except (ParameterException, *start_errors) as error:
        print(f'{prog}: {error}', file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, SIGTERM
        pass
    except Exception as error:   # other start-up faults: a message, a non-zero exit
        print(f'{prog}: {type(error).__name__}: {error}', file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


class FirstFrameGate:
    """Whether a camera may send its first frame: once `image_pub` has had
    `image_subscribers` subscribers and each of the other publishers one for `settle`
    seconds (always, when image_subscribers is 0). DDS matches the two ends of a topic one
    at a time: a publisher counts a subscriber it has matched while that subscriber may not
    have matched the publisher yet, and drops a best-effort sample from it; the wait lets
    both ends finish."""

    def __init__(self, image_subscribers, settle=0.5):
        self.image_subscribers = image_subscribers
        self.settle = settle
        self.since = None

    def __call__(self, image_pub, other_pubs, now=None):
        if self.image_subscribers <= 0:
            return True
        now = time.monotonic() if now is None else now
        if image_pub.get_subscription_count() < self.image_subscribers or \
                any(pub.get_subscription_count() == 0 for pub in other_pubs):
            self.since = None
            return False
        self.since = now if self.since is None else self.since
        return now - self.since >= self.settle
