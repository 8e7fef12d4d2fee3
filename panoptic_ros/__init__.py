"""panoptic_ros: single-shot panoptic segmentation for ROS 2.

Layout (data flows one way, image -> outputs):
  panoptic_ros.core  pure algorithm (torch / numpy / cv2 only, never rclpy)
  panoptic_ros.ros   thin ROS 2 layer: message <-> numpy conversion, nodes
  panoptic_ros.msg   generated message classes (built by CMake / scripts/setup_env.sh)
"""
