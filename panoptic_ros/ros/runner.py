"""main() of the camera source nodes (run until the node says it is finished), and their
wait for subscribers before the first frame.

Both camera drivers (camera_node, sim_camera_node) spin until their `finished` flag is set
(end of a file, folder or sequence without looping); start-up errors print one line naming
the program and exit with code 2.
"""

import sys

import rclpy
from rclpy.exceptions import ParameterException


def run_until_finished(node_class, prog, args=None, start_errors=()):
    """Create node_class(), spin it until node.finished; returns the exit code."""
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        while rclpy.ok() and not node.finished:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (ParameterException, *start_errors) as error:
        print(f'{prog}: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def subscribed(image_pub, other_pubs, image_subscribers):
    """Whether a camera may send its first frame: `image_pub` has image_subscribers
    subscribers and each of other_pubs one (always, when image_subscribers is 0)."""
    if image_subscribers <= 0:
        return True
    return image_pub.get_subscription_count() >= image_subscribers and \
        all(pub.get_subscription_count() > 0 for pub in other_pubs)
