"""Test process: the real panoptic_node with faults injected into its pipeline.

Usage: faulty_node.py --ros-args -p model_path:=... (the usual node arguments)
The first pixel's red value of each image selects a fault: 1 -> the pipeline raises
RuntimeError('injected fault'); 2 -> the network output holds NaN (as a corrupted model
would produce); anything else -> the normal pipeline. Everything else is the real node.
"""
import dataclasses
import sys

import rclpy
import torch

from panoptic_ros.ros.panoptic_node import PanopticNode


def faulty(pipeline):
    def run(rgb):
        if rgb[0, 0, 0] == 1:
            raise RuntimeError('injected fault')
        result = pipeline(rgb)
        if rgb[0, 0, 0] == 2:
            logits = torch.full_like(result.network.sem_logits, float('nan'))
            result = dataclasses.replace(
                result, network=dataclasses.replace(result.network, sem_logits=logits))
        return result
    return run


def main():
    rclpy.init(args=sys.argv)
    node = PanopticNode()
    node.pipeline = faulty(node.pipeline)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    main()
