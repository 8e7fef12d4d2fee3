"""Python packaging of panoptic_ros for the standalone venv (scripts/setup_env.sh).

colcon builds this package with ament_cmake (CMakeLists.txt), which installs the same Python
sources next to the generated messages; this file is not used there.
"""
from setuptools import find_packages, setup

setup(
    name='panoptic_ros',
    version='0.1.0',
    description='Real-time single-shot panoptic segmentation for ROS 2',
    license='Apache-2.0',
    packages=find_packages(include=['panoptic_ros', 'panoptic_ros.*']),
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'panoptic-ros-sim = panoptic_ros.sim_cli:main',
            'panoptic-ros-eval = panoptic_ros.eval_cli:main',
            'panoptic-ros-train = panoptic_ros.train_cli:main',
            'panoptic-ros-train-policy = panoptic_ros.policy_train_cli:main',
            'panoptic-ros-quantize = panoptic_ros.quantize_cli:main',
            'sim_camera_node = panoptic_ros.ros.entry_points:sim_camera_node',
            'panoptic_node = panoptic_ros.ros.entry_points:panoptic_node',
            'camera_node = panoptic_ros.ros.entry_points:camera_node',
        ],
    },
)
