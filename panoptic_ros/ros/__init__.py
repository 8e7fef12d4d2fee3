"""Thin ROS 2 layer: message conversion and nodes."""
