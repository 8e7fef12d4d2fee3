"""ros2 launch panoptic_ros camera.launch.py [source:=sim|usb|video|none] [rviz:=true|false]
                                            [params_file:=...] [cameras:=[...]]
                                            [video:=PATH] [device:=0]
                                            [calibration_file:=PATH] [sequence:=PATH]

A camera source, panoptic_node with one parameters file, and optionally rviz2. Arguments
and conditions only; every node setting lives in the YAML, except `cameras`: the camera
namespaces panoptic_node subscribes to (default [""]: one camera on image / camera_info).
Several cameras, e.g. the simulator's surround rig:
  cameras:="[front, left, rear, right]" params_file:=<share>/config/surround.yaml
  sequence:=<a folder from panoptic-ros-sim rig>
(surround.yaml holds the rig's fallback extrinsics, three numbers per camera, and a grid
around the robot; a real rig takes its extrinsics from tf).

`source` and `rviz` accept only the values listed: launch refuses any other before it
starts a process. Arguments that become string parameters are passed as strings
(`device:=0` is the string '0', not the integer 0). The camera is required: when it exits
(a device that cannot be opened, a file that ends) the whole launch shuts down, so its own
message is the last thing printed. rviz2 is looked up first: `rviz:=true` where rviz2 is not
installed fails with "package 'rviz2' not found" before any process starts.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import EqualsSubstitution, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('panoptic_ros')
    params_file = LaunchConfiguration('params_file')
    source = LaunchConfiguration('source')
    calibration_file = ParameterValue(LaunchConfiguration('calibration_file'), value_type=str)
    return LaunchDescription([
        DeclareLaunchArgument('source', default_value='sim', choices=['sim', 'usb', 'video',
                                                                      'none'],
                              description='camera source: sim, usb, video or none'),
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([share, 'config',
                                                                  'panoptic.yaml']),
                              description='panoptic_node parameters'),
        DeclareLaunchArgument('cameras', default_value='[""]',
                              description='panoptic_node camera namespaces, a YAML list'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='start rviz2'),
        DeclareLaunchArgument('device', default_value='0', description='usb: device index'),
        DeclareLaunchArgument('video', default_value='',
                              description='video: a video file or an image folder'),
        DeclareLaunchArgument('calibration_file', default_value='',
                              description='usb/video: camera_calibration YAML'),
        DeclareLaunchArgument('sequence', default_value='',
                              description='sim: rendered sequence or rig folder (empty: '
                                          'live)'),
        # first, so that a missing rviz2 stops the launch before any node has started
        Node(package='rviz2', executable='rviz2', name='rviz2',
             arguments=['-d', PathJoinSubstitution([share, 'config', 'panoptic.rviz'])],
             condition=IfCondition(LaunchConfiguration('rviz'))),
        Node(package='panoptic_ros', executable='sim_camera_node', name='sim_camera',
             parameters=[{'sequence': ParameterValue(LaunchConfiguration('sequence'),
                                                     value_type=str)}],
             on_exit=Shutdown(reason='the camera exited'),
             condition=IfCondition(EqualsSubstitution(source, 'sim'))),
        Node(package='panoptic_ros', executable='camera_node', name='camera',
             parameters=[{'source': ParameterValue(LaunchConfiguration('device'),
                                                   value_type=str),
                          'calibration_file': calibration_file}],
             on_exit=Shutdown(reason='the camera exited'),
             condition=IfCondition(EqualsSubstitution(source, 'usb'))),
        Node(package='panoptic_ros', executable='camera_node', name='camera',
             parameters=[{'source': ParameterValue(LaunchConfiguration('video'),
                                                   value_type=str),
                          'calibration_file': calibration_file}],
             on_exit=Shutdown(reason='the camera exited'),
             condition=IfCondition(EqualsSubstitution(source, 'video'))),
        Node(package='panoptic_ros', executable='panoptic_node', name='panoptic_node',
             parameters=[params_file,
                         {'cameras': ParameterValue(LaunchConfiguration('cameras'))}],
             output='screen'),
    ])
