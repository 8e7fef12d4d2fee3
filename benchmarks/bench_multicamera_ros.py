"""Benchmark: several cameras through one node, end to end through ROS 2. Prints a table and
writes it to a file.

Three processes, as on a robot: sim_camera_node replaying the surround rig (four cameras,
640x480, `--rate` Hz each, and odometry; data/rig_surround, rendered once) -> panoptic_node
(the shipped model, default backend: INT8 rebatched to the number of cameras) -> this
process, subscribed (reliable) to every camera's panoptic output and to occupancy and
occupancy/accumulated (so that the grids are computed, as when a navigation stack listens).
Configurations, interleaved round by round (this VM's speed drifts): the node with one
camera (`cameras: [front]`: the other three cameras' images still cross DDS) and with all
four. Per run: images answered per second (all cameras together) and per camera, the age of
each answer (arrival - image stamp) p50 / p95, the node's RSS and CPU. The ratio of four to
one camera is taken within each round.

Usage: python benchmarks/bench_multicamera_ros.py [--rate 10] [--seconds 30] [--rounds 3]
           [--out benchmarks/results/multicamera_ros_cpu.md]
"""

import argparse
import json
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import machine_description, write_result
from panoptic_ros.core.sim.rig import render_rig_sequence, RigSequence, rig_parameters
from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id
from panoptic_ros.ros.parameters import ros_args
from ros_load import process_cpu_seconds, process_rss_mb, summarize_ages

RIG = Path('data/rig_surround')
CONFIGS = {'1 camera': ['front'], '4 cameras': ['front', 'left', 'rear', 'right']}


def node_command(rig, cameras, cache_dir):
    params = {**rig_parameters([c for c in rig.cameras if c.name in cameras], rig.grid),
              'use_tf': False, 'cache_dir': str(cache_dir)}
    return [sys.executable, '-m', 'panoptic_ros.ros.panoptic_node', '--ros-args',
            *ros_args(params)]


def record(env, cameras, warmup, seconds, node_pid):
    """Run in a child process: subscribe, wait for the first answers, then measure."""
    script = Path(__file__).resolve()
    out = subprocess.run([sys.executable, str(script), '--record', json.dumps(
        {'cameras': cameras, 'warmup': warmup, 'seconds': seconds, 'pid': node_pid})],
        env=env, capture_output=True, text=True, timeout=warmup + seconds + 300)
    if out.returncode != 0:
        raise RuntimeError(f'recorder failed: {out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def record_main(spec):
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from panoptic_ros.msg import PanopticSegmentation
    from panoptic_ros.ros.messages import stamp_seconds
    rclpy.init()
    node = rclpy.create_node('multicamera_recorder')
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    answers = {c: [] for c in spec['cameras']}   # (arrival, age)

    def on_answer(msg, camera):
        now = time.time()
        answers[camera].append((now, now - stamp_seconds(msg.header.stamp)))
    for camera in spec['cameras']:
        node.create_subscription(PanopticSegmentation, f'{camera}/panoptic',
                                 lambda m, c=camera: on_answer(m, c), reliable)
    grids = []
    for topic in ('occupancy', 'occupancy/accumulated'):
        node.create_subscription(OccupancyGrid, topic, grids.append, latched)
    deadline = time.time() + 300
    while not all(answers.values()) and time.time() < deadline:   # the node is up
        rclpy.spin_once(node, timeout_sec=0.05)
    start = time.time() + spec['warmup']
    cpu_start = None
    end = start + spec['seconds']
    while time.time() < end:
        if cpu_start is None and time.time() >= start:
            cpu_start = process_cpu_seconds(spec['pid'])
        rclpy.spin_once(node, timeout_sec=0.05)
    cpu = process_cpu_seconds(spec['pid']) - cpu_start
    rss = process_rss_mb(spec['pid'])
    measured = {c: [age for t, age in a if start <= t < end] for c, a in answers.items()}
    ages = [age for a in measured.values() for age in a]
    print(json.dumps({'per_camera': {c: len(a) / spec['seconds'] for c, a in measured.items()},
                      'rate': len(ages) / spec['seconds'], 'ages': summarize_ages(ages),
                      'cpu': 100 * cpu / spec['seconds'], 'rss': rss,
                      'grids': len(grids)}))
    node.destroy_node()
    rclpy.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rate', type=float, default=10.0, help='each camera (Hz)')
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--warmup', type=float, default=10.0)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--out', type=Path,
                        default=Path('benchmarks/results/multicamera_ros_cpu.md'))
    parser.add_argument('--record', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.record:
        return record_main(json.loads(args.record))
    if not (RIG / 'rig.json').is_file():
        print(f'rendering the surround rig to {RIG} (once) ...', flush=True)
        render_rig_sequence(RIG, 7, 150)
    rig = RigSequence(RIG)
    work = Path(tempfile.mkdtemp(prefix='bench_multicamera_'))
    results = {name: [] for name in CONFIGS}
    for round_index in range(args.rounds):
        for name, cameras in CONFIGS.items():
            env = isolated_ros_env(pick_domain_id(), work / 'ros_home')
            camera = subprocess.Popen(
                [sys.executable, '-m', 'panoptic_ros.ros.sim_camera_node', '--ros-args',
                 '-p', f'sequence:={RIG.resolve()}', '-p', f'rate:={args.rate}',
                 '-p', 'publish_ground_truth:=false'], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            log = open(work / f'node_{round_index}_{len(cameras)}.log', 'w')
            node = subprocess.Popen(node_command(rig, cameras, work / 'cache'), env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                result = record(env, cameras, args.warmup, args.seconds, node.pid)
            finally:
                for proc in (node, camera):
                    proc.terminate()
                    proc.wait(timeout=30)
                log.close()
            results[name].append(result)
            print(f'round {round_index + 1} {name}: {result["rate"]:.1f} images/s, age p95 '
                  f'{result["ages"]["p95_ms"]:.0f} ms, RSS {result["rss"]:.0f} MB', flush=True)
    text = report(results, args, rig)
    write_result(text, args.out)


def spread(values, fmt='{:.1f}'):
    return f'{fmt.format(np.median(values))} ({fmt.format(min(values))}–' \
           f'{fmt.format(max(values))})'


def report(results, args, rig):
    rows = ['| node | images answered / s | per camera / s | age p50 (ms) | age p95 (ms) | '
            'node RSS (MB) | node CPU (%) |', '|---|---|---|---|---|---|---|']
    for name, runs in results.items():
        per_camera = {c: [r['per_camera'][c] for r in runs] for c in runs[0]['per_camera']}
        rows.append(
            f'| {name} | {spread([r["rate"] for r in runs])} | ' +
            ', '.join(f'{c} {np.median(v):.1f}' for c, v in per_camera.items()) +
            f' | {spread([r["ages"]["p50_ms"] for r in runs], "{:.0f}")} | '
            f'{spread([r["ages"]["p95_ms"] for r in runs], "{:.0f}")} | '
            f'{spread([r["rss"] for r in runs], "{:.0f}")} | '
            f'{spread([r["cpu"] for r in runs], "{:.0f}")} |')
    one, four = results['1 camera'], results['4 cameras']
    ratios = [b['rate'] / a['rate'] for a, b in zip(one, four)]
    rss = [b['rss'] / a['rss'] for a, b in zip(one, four)]
    return '\n'.join([
        '# Several cameras through one node (ROS 2, CPU)', '',
        f'Surround rig {RIG} ({len(rig.cameras)} cameras, 640x480) replayed by '
        f'sim_camera_node at {args.rate:g} Hz per camera; {args.rounds} rounds, each '
        f'{args.warmup:g} s warm-up then {args.seconds:g} s measured; median (range).', '',
        *rows, '',
        'Four cameras against one, within each round: images answered '
        f'{spread(ratios, "{:.2f}")}x; node RSS {spread(rss, "{:.2f}")}x.', '',
        f'Machine: {machine_description()}.', ''])


if __name__ == '__main__':
    main()
