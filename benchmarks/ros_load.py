"""Benchmark harness, load through ROS: a camera-like publisher, an output-age recorder and
a pass-through node.

Used by benchmarks/bench_ros.py (end-to-end FPS / latency / CPU / RSS), benchmarks/soak.py
and the overload test. Each role is its own process, as on a robot:

  python benchmarks/ros_load.py publish --width 640 --height 480 --rate 30 --frames 300
  python benchmarks/ros_load.py record --kind panoptic --out ages.json
  python benchmarks/ros_load.py passthrough

`publish` renders a few sim frames (pybullet), waits until something subscribes to `image`,
publishes `--warmup` frames, then `--frames` more at `--rate` Hz with wall-clock stamps
(`camera_info` before each image), and prints one JSON line: frames sent and the stamp of
the first measured frame. `record` subscribes to the outputs (reliable), notes for each
message its arrival time minus its header stamp, and writes them as JSON when interrupted
(SIGINT / SIGTERM); it touches OUT.ready once every output topic has a publisher.
`passthrough` republishes each `image` on `image/out` with the same header: the cost of
moving the same images through rclpy, with no processing.

`run_load()` starts publisher and recorder around an already started node process, samples
the node's CPU time and RSS from /proc, and returns the measurements. Linux only (/proc).
"""

import argparse
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np

CLOCK_TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


# ---- process measurements (no ROS) ------------------------------------------------------------
def process_cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss_mb(pid):
    """Resident set size of a process in MB (Linux /proc)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f'no VmRSS for pid {pid}')


def summarize_ages(ages):
    """p50 / p95 / max of output ages in milliseconds."""
    if not ages:
        return {'p50_ms': float('nan'), 'p95_ms': float('nan'), 'max_ms': float('nan')}
    a = np.asarray(ages) * 1e3
    return {'p50_ms': float(np.percentile(a, 50)), 'p95_ms': float(np.percentile(a, 95)),
            'max_ms': float(a.max())}


# ---- roles (ROS) ----------------------------------------------------------------------------
def _init(name):
    import rclpy
    rclpy.init()
    return rclpy, rclpy.create_node(name)


def publish_main(args):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from panoptic_ros.core.camera_model import camera_info_dict
    from panoptic_ros.core.sim.world import render_random_frame, SimConfig
    from panoptic_ros.ros.image_codec import numpy_to_compressed, numpy_to_image
    from panoptic_ros.ros.messages import camera_info_msg, stamp_seconds
    from sensor_msgs.msg import CompressedImage

    # one camera (as on a robot): intrinsics and pose fixed; the pose is panoptic_node's
    # default camera_xyz / camera_rpy, so the occupancy grid is the real one
    config = SimConfig(width=args.width, height=args.height, vertical_fov_deg=(60.0, 60.0),
                       camera_height=(1.0, 1.0), camera_pitch_deg=(11.459, 11.459),
                       camera_roll_deg=(0.0, 0.0))
    frames = [render_random_frame(args.seed + k, config) for k in range(args.distinct)]
    rclpy, node = _init('load_publisher')
    if args.compressed:
        import cv2
        pub = node.create_publisher(CompressedImage, 'image/compressed', qos_profile_sensor_data)
        msgs = [numpy_to_compressed(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)) for f in frames]
    else:
        pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
        msgs = [numpy_to_image(f.rgb, 'rgb8') for f in frames]
    info_pub = node.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
    infos = [camera_info_msg(camera_info_dict(f.K, args.width, args.height), msgs[0].header)
             for f in frames]
    deadline = time.monotonic() + args.wait
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print(json.dumps({'error': 'nothing subscribed to the image topic'}), flush=True)
        return 1
    period = 1.0 / args.rate
    sent, first_measured = 0, None
    next_time = time.monotonic()
    for k in range(args.warmup + args.frames):
        now = node.get_clock().now().to_msg()
        if k == args.warmup:
            first_measured = stamp_seconds(now)
        msg, info = msgs[k % len(msgs)], infos[k % len(msgs)]
        msg.header.stamp = info.header.stamp = now
        msg.header.frame_id = info.header.frame_id = 'camera_optical'
        info_pub.publish(info)
        pub.publish(msg)
        sent += 1
        next_time += period
        delay = next_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:   # late: do not try to catch up with a burst
            next_time = time.monotonic()
    time.sleep(0.5)   # let the last samples leave before the writer goes away
    print(json.dumps({'sent': sent, 'warmup': args.warmup, 'first_measured': first_measured}),
          flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def record_main(args):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from panoptic_ros.ros.messages import stamp_seconds
    rclpy, node = _init('load_recorder')
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    records = {}

    def recorder(topic):
        def on_msg(msg):
            now = time.time()
            stamp = stamp_seconds(msg.header.stamp)
            records.setdefault(topic, []).append((stamp, now))
        return on_msg
    diagnostics = {}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith('panoptic_node'):
                diagnostics.update({v.key: v.value for v in status.values},
                                   level=int.from_bytes(status.level, 'little')
                                   if isinstance(status.level, bytes) else int(status.level),
                                   message=status.message)
    if args.kind == 'panoptic':
        from diagnostic_msgs.msg import DiagnosticArray
        node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
        from nav_msgs.msg import OccupancyGrid
        from panoptic_ros.msg import DetectionArray, PanopticSegmentation
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        subs = [node.create_subscription(PanopticSegmentation, 'panoptic',
                                         recorder('panoptic'), reliable),
                node.create_subscription(DetectionArray, 'detections',
                                         recorder('detections'), reliable),
                node.create_subscription(OccupancyGrid, 'occupancy', recorder('occupancy'),
                                         latched)]
    else:
        subs = [node.create_subscription(Image, 'image/out', recorder('image/out'), reliable)]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ready = False
    while not stop:
        rclpy.spin_once(node, timeout_sec=0.05)
        if not ready and all(node.count_publishers(s.topic_name) > 0 for s in subs):
            ready = True
            Path(args.out + '.ready').write_text('ready')
    records['_diagnostics'] = diagnostics   # the node's last /diagnostics values
    Path(args.out).write_text(json.dumps(records))
    node.destroy_node()
    rclpy.shutdown()
    return 0


def passthrough_main(args):
    from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    rclpy, node = _init('passthrough_node')
    pub = node.create_publisher(Image, 'image/out',
                                QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(Image, 'image', pub.publish, qos_profile_sensor_data)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    return 0


# ---- orchestration ----------------------------------------------------------------------------
def _role(role, *args):
    return [sys.executable, str(Path(__file__).resolve()), role, *map(str, args)]


def run_load(node_proc, env, workdir, width, height, rate, frames, kind='panoptic',
             warmup=10, compressed=False, start_timeout=300.0, sample_every=0.5):
    """Drive `node_proc` (a started Popen of the node under test) with camera frames.

    Returns a dict: sent, received (per topic, measured window only), fps (panoptic or
    image/out outputs per second of the measured window), out_of_order (outputs whose stamp
    is not newer than the one received before them), ages (seconds, list), p50/p95/max
    age, cpu_percent of the node over the window (100 = one core), rss_mb at start / end
    of the window and its samples, and the node's last /diagnostics values (panoptic).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f'ages_{kind}_{width}x{height}.json'
    recorder = subprocess.Popen(_role('record', '--kind', kind, '--out', out), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    publisher = None
    try:
        deadline = time.monotonic() + start_timeout
        ready = Path(str(out) + '.ready')
        ready.unlink(missing_ok=True)
        while not ready.exists() and time.monotonic() < deadline:
            if node_proc.poll() is not None or recorder.poll() is not None:
                raise RuntimeError(f'node (exit {node_proc.poll()}) or recorder (exit '
                                   f'{recorder.poll()}) ended before the load')
            time.sleep(0.1)
        if not ready.exists():
            raise RuntimeError('the recorder never saw the node\'s publishers')
        publisher = subprocess.Popen(
            _role('publish', '--width', width, '--height', height, '--rate', rate, '--frames',
                  frames, '--warmup', warmup, *(['--compressed'] if compressed else [])),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples = []
        while publisher.poll() is None:
            if node_proc.poll() is not None:
                raise RuntimeError(f'node died under load with code {node_proc.returncode}')
            samples.append((time.time(), process_cpu_seconds(node_proc.pid),
                            process_rss_mb(node_proc.pid)))
            time.sleep(sample_every)
        stdout, stderr = publisher.communicate()
        if publisher.returncode != 0:
            raise RuntimeError(f'publisher failed: {stdout[-1000:]} {stderr[-2000:]}')
        sent = json.loads(stdout.strip().splitlines()[-1])
        time.sleep(1.0)   # outputs of the last frames
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
    records = json.loads(out.read_text())
    diagnostics = records.pop('_diagnostics', {})
    start = sent['first_measured']
    topic = 'panoptic' if kind == 'panoptic' else 'image/out'
    measured = {t: [(s, r) for s, r in v if s >= start - 1e-6] for t, v in records.items()}
    arrived = measured.get(topic, [])   # in the order the recorder received them
    out_of_order = sum(b[0] <= a[0] for a, b in zip(arrived, arrived[1:]))
    main = sorted(arrived)
    ages = [r - s for s, r in main]
    window = [x for x in samples if x[0] >= start]
    if len(window) < 2:
        window = samples[-2:]
    span = (window[-1][0] - window[0][0]) if len(window) >= 2 else float('nan')
    cpu = 100.0 * (window[-1][1] - window[0][1]) / span if span and span > 0 else float('nan')
    arrivals = [r for _, r in main]
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else 0.0
    result = {'width': width, 'height': height, 'rate': rate, 'sent': sent['sent'] - warmup,
              'received': {t: len(v) for t, v in measured.items()}, 'fps': fps,
              'out_of_order': out_of_order,
              'ages': ages, 'cpu_percent': cpu,
              'rss_mb_start': window[0][2] if window else float('nan'),
              'rss_mb_end': window[-1][2] if window else float('nan'),
              'rss_mb': [x[2] for x in samples], 'diagnostics': diagnostics}
    result.update(summarize_ages(ages))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python benchmarks/ros_load.py',
                                     description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='role', required=True)
    p = sub.add_parser('publish', help='camera-like image publisher')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--rate', type=float, default=30.0)
    p.add_argument('--frames', type=int, default=300)
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--distinct', type=int, default=4, help='rendered frames to cycle through')
    p.add_argument('--seed', type=int, default=500)
    p.add_argument('--wait', type=float, default=120.0, help='seconds to wait for a subscriber')
    p.add_argument('--compressed', action='store_true', help='publish image/compressed (jpeg)')
    r = sub.add_parser('record', help='record output ages')
    r.add_argument('--kind', choices=('panoptic', 'passthrough'), default='panoptic')
    r.add_argument('--out', required=True)
    sub.add_parser('passthrough', help='republish image on image/out')
    args = parser.parse_args(argv)
    return {'publish': publish_main, 'record': record_main,
            'passthrough': passthrough_main}[args.role](args)


if __name__ == '__main__':
    sys.exit(main())
