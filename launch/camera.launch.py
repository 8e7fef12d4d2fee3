"""ros2 launch panoptic_ros camera.launch.py [source:=sim|usb|video|none] [rviz:=true]
                                            [params_file:=...] [video:=PATH] [device:=0]
                                            [calibration_file:=PATH] [sequence:=PATH]

A camera source, panoptic_node with one parameters file, and optionally rviz2. Arguments
and conditions only; every node setting lives in the YAML.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import EqualsSubstitution, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('panoptic_ros')
    params_file = LaunchConfiguration('params_file')
    source = LaunchConfiguration('source')
    return LaunchDescription([
        DeclareLaunchArgument('source', default_value='sim',
                              description='camera source: sim, usb, video or none'),
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([share, 'config',
                                                                  'panoptic.yaml']),
                              description='panoptic_node parameters'),
        DeclareLaunchArgument('rviz', default_value='false', description='start rviz2'),
        DeclareLaunchArgument('device', default_value='0', description='usb: device index'),
        DeclareLaunchArgument('video', default_value='',
                              description='video: a video file or an image folder'),
        DeclareLaunchArgument('calibration_file', default_value='',
                              description='usb/video: camera_calibration YAML'),
        DeclareLaunchArgument('sequence', default_value='',
                              description='sim: rendered sequence folder (empty: live)'),
        Node(package='panoptic_ros', executable='sim_camera_node', name='sim_camera',
             parameters=[{'sequence': LaunchConfiguration('sequence')}],
             condition=IfCondition(EqualsSubstitution(source, 'sim'))),
        Node(package='panoptic_ros', executable='camera_node', name='camera',
             parameters=[{'source': LaunchConfiguration('device'),
                          'calibration_file': LaunchConfiguration('calibration_file')}],
             condition=IfCondition(EqualsSubstitution(source, 'usb'))),
        Node(package='panoptic_ros', executable='camera_node', name='camera',
             parameters=[{'source': LaunchConfiguration('video'),
                          'calibration_file': LaunchConfiguration('calibration_file')}],
             condition=IfCondition(EqualsSubstitution(source, 'video'))),
        Node(package='panoptic_ros', executable='panoptic_node', name='panoptic_node',
             parameters=[params_file], output='screen'),
        Node(package='rviz2', executable='rviz2', name='rviz2',
             arguments=['-d', PathJoinSubstitution([share, 'config', 'panoptic.rviz'])],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
