"""launch/camera.launch.py: what it names exists, and, where ROS 2's `launch` is installed,
`ros2 launch panoptic_ros camera.launch.py` starts what it should.

Verifies (always): the file is arguments and conditions only (imports from launch and
launch_ros, no other code); every panoptic_ros executable it starts is installed by
CMakeLists.txt and is a console script; every file it joins onto the package share exists;
every LaunchConfiguration it reads is declared, and every declared argument is documented in
its docstring; each `source:=` value it documents starts one camera node.
Verifies (when launch, launch_ros and ros2launch import; skipped in the pip environment, where
they cannot be installed): the package built into an install prefix as colcon would, then
ros2launch's own `launch_a_launch_file` (what `ros2 launch` calls) with `source:=sim` starts
sim_camera and panoptic_node, panoptic labels and an occupancy grid arrive over DDS with the
camera's frame ids, and Ctrl-C (SIGINT) ends every process with exit 0; `source:=none`
starts panoptic_node alone; `source:=video video:=FOLDER` starts camera_node on an image
folder; `cameras:=[front, left, rear, right]` with the surround parameters file and a rig
folder as `sequence` gives per-camera labels and the rig's grid. Verifies (always)
config/panoptic.rviz against running panoptic_node and sim_camera_node processes: each
display's topic has a publisher of the display's message type with QoS the display can
match, and the fixed frame is the grid's. Does not verify: rviz2
itself (`rviz:=true`; not installable here; the display and property names were checked by
hand against ros2/rviz's sources).
"""

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ament_prefix import build_install_prefix, prefix_env
from ros_session import rclpy_node, spin_until

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'camera.launch.py'
CAMERAS = {'sim': 'sim_camera_node', 'usb': 'camera_node', 'video': 'camera_node'}


def _calls(tree, name):
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == name]


def _keywords(call):
    return {k.arg: k.value for k in call.keywords}


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def test_launch_file_names_what_the_package_installs():
    text = LAUNCH_FILE.read_text()
    tree = ast.parse(text)
    # Arguments and conditions only: imports from launch / launch_ros and one function.
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.module.split('.')[0] in ('launch', 'launch_ros'), node.module
        else:
            assert isinstance(node, (ast.FunctionDef, ast.Expr)), ast.dump(node)[:80]
    [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert function.name == 'generate_launch_description'
    assert isinstance(function.body[-1], ast.Return)

    cmake = (ROOT / 'CMakeLists.txt').read_text()
    setup = (ROOT / 'setup.py').read_text()
    started = {}
    for call in _calls(tree, 'Node'):
        kw = _keywords(call)
        package, executable = _literal(kw['package']), _literal(kw['executable'])
        if package != 'panoptic_ros':
            continue
        assert (ROOT / 'scripts' / 'ros2' / executable).is_file(), executable
        assert f'scripts/ros2/{executable}' in cmake, f'{executable} not installed by CMake'
        assert f"'{executable} = panoptic_ros.ros.entry_points:{executable}'" in setup, \
            f'{executable} is not a console script'
        # condition=IfCondition(EqualsSubstitution(source, 'sim')) or none
        condition = kw.get('condition')
        if condition is None:
            started.setdefault(None, set()).add(executable)
            continue
        [equals] = condition.args
        assert condition.func.id == 'IfCondition' and equals.func.id == 'EqualsSubstitution'
        assert equals.args[0].id == 'source'
        started.setdefault(_literal(equals.args[1]), set()).add(executable)
    assert started.pop(None) == {'panoptic_node'}          # always started
    assert {s: e for s, [e] in started.items()} == CAMERAS  # one camera per source

    # Files joined onto the share directory exist in the source tree (installed from it).
    for call in _calls(tree, 'PathJoinSubstitution'):
        parts = call.args[0].elts
        if isinstance(parts[0], ast.Name) and parts[0].id == 'share':
            relative = Path(*[_literal(p) for p in parts[1:]])
            assert (ROOT / relative).is_file(), relative
            assert f'{relative.parts[0]}' in cmake

    declared = {_literal(c.args[0]): _keywords(c) for c in
                _calls(tree, 'DeclareLaunchArgument')}
    used = {_literal(c.args[0]) for c in _calls(tree, 'LaunchConfiguration')}
    assert used <= set(declared), used - set(declared)
    docstring = ast.get_docstring(tree)
    for name in declared:
        assert f'{name}:=' in docstring, f'argument {name} not in the docstring'
    for source in list(CAMERAS) + ['none']:
        assert source in docstring
    # launch itself refuses a value outside these lists, before it starts anything
    assert _literal(declared['source']['choices']) == list(CAMERAS) + ['none']
    assert _literal(declared['rviz']['choices']) == ['true', 'false']


def _node_parameters(executable):
    """name -> default of the parameters that `executable` (a panoptic_ros node) declares."""
    import importlib
    return {name: spec.default for name, spec in
            importlib.import_module(f'panoptic_ros.ros.{executable}').PARAMETERS.items()}


def test_launch_arguments_reach_string_parameters_as_strings():
    # launch_ros reads an argument's text as YAML: device:=0 would become the integer 0 and
    # camera_node, whose `source` is a string, would refuse it and exit. Every value given to
    # a string parameter must be ParameterValue(..., value_type=str).
    tree = ast.parse(LAUNCH_FILE.read_text())
    checked = 0
    for call in _calls(tree, 'Node'):
        kw = _keywords(call)
        if _literal(kw['package']) != 'panoptic_ros' or 'parameters' not in kw:
            continue
        executable = _literal(kw['executable'])
        declared = _node_parameters(executable)
        for entry in kw['parameters'].elts:
            if not isinstance(entry, ast.Dict):
                continue   # a parameters file: typed by YAML, written by us
            for key, value in zip(entry.keys, entry.values):
                name = _literal(key)
                assert name in declared, f'{name} is not a parameter of {executable}'
                if isinstance(value, ast.Name):   # a variable assigned in the function
                    [value] = [a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                               and a.targets[0].id == value.id]
                if isinstance(declared[name], str):
                    assert isinstance(value, ast.Call) and value.func.id == 'ParameterValue' \
                        and ast.unparse(_keywords(value)['value_type']) == 'str', \
                        f'{name}: {ast.unparse(value)} is not passed as a string'
                    checked += 1
    assert checked >= 5   # sequence, source (usb, video), calibration_file (usb, video)


def test_rviz_is_looked_up_before_any_node_starts():
    # launch executes its actions in order: rviz2's package is resolved first, so
    # rviz:=true without rviz2 fails before panoptic_node or a camera has started.
    tree = ast.parse(LAUNCH_FILE.read_text())
    packages = [_literal(_keywords(c)['package']) for c in _calls(tree, 'Node')]
    assert packages[0] == 'rviz2' and 'rviz2' not in packages[1:]


LAUNCH = ('import sys\n'
          'from ros2launch.api import get_share_file_path_from_package, launch_a_launch_file\n'
          "path = get_share_file_path_from_package(package_name='panoptic_ros',\n"
          "                                        file_name='camera.launch.py')\n"
          'sys.exit(launch_a_launch_file(launch_file_path=path,\n'
          '                              launch_file_arguments=sys.argv[1:],\n'
          '                              noninteractive=True))\n')


def _launch_available():
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
        import ros2launch.api  # noqa: F401
    except ImportError:
        return False
    return shutil.which('cmake') is not None


@pytest.fixture(scope='module')
def install_prefix(tmp_path_factory):
    return build_install_prefix(tmp_path_factory.mktemp('prefix'))


def _start_launch(install, ros_env, log_path, *arguments):
    env = prefix_env(install, ros_env)
    log = open(log_path, 'w')
    proc = subprocess.Popen([sys.executable, '-c', LAUNCH, *arguments], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _stop(proc, log_path):
    """SIGINT to the launch process (Ctrl-C); returns its exit code, the log tail on failure."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Every process it started has ended with it (same session).
    deadline = time.monotonic() + 10
    while _session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session_alive(proc.pid), 'processes of the launch outlived it'
    return code


def _session_alive(sid):
    for status in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = status.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != 'Z':  # session id; zombies do not count
            return True
    return False


def _run_launch(install, ros_env, log_path, arguments, want_outputs,
                camera_topic='panoptic'):
    """Launch with `arguments`, wait for panoptic_node (and, with want_outputs, one message
    on camera_topic and one occupancy message), Ctrl-C it. Returns (messages by topic, node
    names, exit code, log)."""
    from rclpy.qos import qos_profile_sensor_data
    from nav_msgs.msg import OccupancyGrid
    from panoptic_ros.msg import PanopticSegmentation

    proc = _start_launch(install, ros_env, log_path, *arguments)
    got = {}
    try:
        with rclpy_node(ros_env, 'launch_probe') as node:
            for topic, kind in ((camera_topic, PanopticSegmentation),
                                ('occupancy', OccupancyGrid)):
                node.create_subscription(kind, topic, lambda m, t=topic: got.setdefault(t, m),
                                         qos_profile_sensor_data)
            if want_outputs:
                spin_until(node, lambda: len(got) == 2 or proc.poll() is not None, 240)
            else:
                spin_until(node, lambda: 'panoptic_node' in node.get_node_names()
                           or proc.poll() is not None, 120)
                spin_until(node, lambda: False, 3)  # time for any other node to appear
            names = set(node.get_node_names())
    finally:
        code = _stop(proc, log_path)
    return got, names, code, log_path.read_text()[-3000:]


# rviz display class -> the message type it subscribes to
RVIZ_DISPLAY_TYPES = {'rviz_default_plugins/Map': 'nav_msgs/msg/OccupancyGrid',
                      'rviz_default_plugins/MarkerArray': 'visualization_msgs/msg/MarkerArray',
                      'rviz_default_plugins/Image': 'sensor_msgs/msg/Image'}


def test_rviz_config_subscribes_to_what_the_node_publishes(model_path, ros_env, tmp_path):
    # config/panoptic.rviz against a running panoptic_node and sim_camera_node: every
    # display's topic has a publisher of the type the display reads, with QoS the display's
    # subscription can match (a reliable subscription needs a reliable publisher, a
    # transient-local one a transient-local publisher), and the fixed frame is the grid's.
    import yaml
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from panoptic_ros.core.settings import PARAMETERS
    config = yaml.safe_load((ROOT / 'config' / 'panoptic.rviz').read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == PARAMETERS['base_frame_id'].default
    displays = [d for d in manager['Displays'] if d['Class'] in RVIZ_DISPLAY_TYPES]
    assert {d['Class'] for d in displays} == set(RVIZ_DISPLAY_TYPES)
    sequence = tmp_path / 'sequence'
    render = subprocess.run([sys.executable, '-m', 'panoptic_ros.sim_cli', 'sequence', '--out',
                             str(sequence), '--frames', '2', '--width', '320', '--height',
                             '240'], capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stderr[-2000:]
    procs = [subprocess.Popen([sys.executable, '-m', 'panoptic_ros.ros.panoptic_node',
                               '--ros-args', '-p', f'model_path:={model_path}',
                               '-p', 'backend:=torch', '-p', 'use_tf:=false',
                               '-p', f'cache_dir:={tmp_path / "cache"}'], env=ros_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, '-m', 'panoptic_ros.ros.sim_camera_node',
                               '--ros-args', '-p', f'sequence:={sequence}'], env=ros_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    try:
        with rclpy_node(ros_env, 'rviz_config_probe') as node:
            def publishers(topic):
                return node.get_publishers_info_by_topic(topic)
            topics = [d['Topic']['Value'] for d in displays]
            assert spin_until(node, lambda: all(publishers(t) for t in topics), 120), \
                {t: len(publishers(t)) for t in topics}
            for display in displays:
                topic = display['Topic']
                for info in publishers(topic['Value']):
                    assert info.topic_type == RVIZ_DISPLAY_TYPES[display['Class']], topic
                    if topic.get('Reliability Policy', 'Reliable') == 'Reliable':
                        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE, topic
                    if topic.get('Durability Policy') == 'Transient Local':
                        assert info.qos_profile.durability == \
                            DurabilityPolicy.TRANSIENT_LOCAL, topic
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.mark.skipif(not _launch_available(), reason='launch / launch_ros / ros2launch are not '
                    'installed (the pip environment has none; a ROS 2 install has them)')
def test_ros2_launch_starts_camera_and_node(install_prefix, ros_env, tmp_path):
    import cv2
    import numpy as np

    got, names, code, log = _run_launch(install_prefix, ros_env, tmp_path / 'sim.log',
                                        ['source:=sim'], want_outputs=True)
    assert set(got) == {'panoptic', 'occupancy'}, log
    assert {'sim_camera', 'panoptic_node'} <= names, (names, log)
    assert got['panoptic'].header.frame_id == 'camera_optical'
    assert got['occupancy'].header.frame_id == 'base_link'
    assert code == 0, log

    folder = tmp_path / 'frames'
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f'{k:03d}.png'), np.full((240, 320, 3), 60 * k, np.uint8))
    got, names, code, log = _run_launch(install_prefix, ros_env, tmp_path / 'video.log',
                                        ['source:=video', f'video:={folder}'],
                                        want_outputs=True)
    assert set(got) == {'panoptic', 'occupancy'}, log
    assert {'camera', 'panoptic_node'} <= names and 'sim_camera' not in names, (names, log)
    assert (got['panoptic'].label.width, got['panoptic'].label.height) == (320, 240)
    assert code == 0, log

    got, names, code, log = _run_launch(install_prefix, ros_env, tmp_path / 'none.log',
                                        ['source:=none'], want_outputs=False)
    assert 'panoptic_node' in names and not names & {'sim_camera', 'camera'}, (names, log)
    assert not got and code == 0, log

    # the surround rig: a cameras argument and the rig's parameters file, nothing else
    import dataclasses
    from panoptic_ros.core.sim.rig import render_rig_sequence, SURROUND_SCENE
    render_rig_sequence(tmp_path / 'rig', 7, 3, config=dataclasses.replace(
        SURROUND_SCENE, width=320, height=240))
    surround = install_prefix / 'share' / 'panoptic_ros' / 'config' / 'surround.yaml'
    got, names, code, log = _run_launch(
        install_prefix, ros_env, tmp_path / 'rig.log',
        ['source:=sim', f'sequence:={tmp_path / "rig"}', f'params_file:={surround}',
         'cameras:=[front, left, rear, right]'], want_outputs=True, camera_topic='rear/panoptic')
    assert set(got) == {'rear/panoptic', 'occupancy'}, log
    assert got['rear/panoptic'].header.frame_id == 'rear_optical'
    assert got['occupancy'].info.origin.position.x == -5.0   # the rig's grid around the robot
    assert code == 0, log


def _run_to_end(install, ros_env, log_path, arguments, timeout=120):
    """Launch with `arguments` and wait until the launch ends by itself; (exit code, log)."""
    proc = _start_launch(install, ros_env, log_path, *arguments)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    code = _stop(proc, log_path)
    return code, log_path.read_text()


@pytest.mark.skipif(not _launch_available(), reason='launch / launch_ros / ros2launch are not '
                    'installed (the pip environment has none; a ROS 2 install has them)')
def test_ros2_launch_refuses_what_it_cannot_start(install_prefix, ros_env, tmp_path):
    # source:=usb on a machine without /dev/video0: camera_node gets the device as a string
    # and ends with its own message; the camera is required, so the launch ends with it.
    assert not Path('/dev/video0').exists(), 'this check needs a machine without a camera'
    code, log = _run_to_end(install_prefix, ros_env, tmp_path / 'usb.log', ['source:=usb'])
    assert 'cannot open device 0' in log, log[-3000:]
    assert 'expecting type' not in log, log[-3000:]
    assert 'shutting down launched system' in log, log[-3000:]
    assert 'Traceback' not in log, log[-3000:]
    # a value outside the choices: refused with the list, nothing started
    code, log = _run_to_end(install_prefix, ros_env, tmp_path / 'bogus.log', ['source:=bogus'])
    assert code != 0 and "'sim', 'usb', 'video', 'none'" in log, log[-3000:]
    assert 'process started' not in log, log[-3000:]
    # rviz:=true without rviz2: the lookup fails before any process starts
    code, log = _run_to_end(install_prefix, ros_env, tmp_path / 'rviz.log',
                            ['source:=sim', 'rviz:=true'])
    assert code != 0 and "package 'rviz2' not found" in log, log[-3000:]
    assert 'process started' not in log, log[-3000:]
