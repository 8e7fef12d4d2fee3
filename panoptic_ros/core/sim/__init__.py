"""Simulated world with pixel-exact ground truth (pybullet, CPU TinyRenderer). No ROS."""
