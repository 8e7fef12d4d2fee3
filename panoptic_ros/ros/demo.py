"""The demo (README's main job): sim camera -> panoptic_node -> evaluator, over DDS.

  python -m panoptic_ros.ros.demo [--frames 60] [--rate 10] [--out out] [--model PATH]
                              [--backend onnxruntime] [--timeout 300]

1. Renders a driving sequence once (out/demo/sequence; reused afterwards).
2. Starts panoptic_node (shipped model) and, once it is up, sim_camera_node replaying the
   sequence, as separate processes in an isolated ROS domain (localhost Fast DDS profile).
3. This process subscribes to the node's outputs and the ground truth, and prints FPS,
   p50/p95 latency from image stamp to output, PQ / SQ / RQ against the ground truth and
   occupancy IoU; writes out/demo_report.md, out/demo_overlays.png (montage) and
   out/demo_occupancy.png (predicted grid next to the ground truth).
The node and the camera are stopped at the end; it finishes on its own.
"""

import argparse
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from panoptic_ros.core.camera_model import rpy_from_base_optical
from panoptic_ros.core.metrics import occupancy_scores, PanopticEvaluator
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.sim.sequence import render_sequence, Sequence
from panoptic_ros.core.sim.taxonomy import class_colors, CLASSES, LABEL_DIVISOR
from panoptic_ros.core.sim.world import SimConfig
from panoptic_ros.core.visualization import colorize_panoptic, occupancy_to_rgb, overlay
from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id

DEMO_SEED = 11


def node_params(sequence, model, backend, path):
    """panoptic_node parameters for this sequence's camera (extrinsics from its metadata)."""
    T = sequence.T_base_optical
    roll, pitch, yaw = rpy_from_base_optical(T)
    g = sequence.grid
    lines = ['panoptic_node:', '  ros__parameters:',
             f'    model_path: "{model}"', f'    backend: "{backend}"',
             '    use_tf: false',
             f'    camera_xyz: [{T[0, 3]:.6f}, {T[1, 3]:.6f}, {T[2, 3]:.6f}]',
             f'    camera_rpy: [{roll:.6f}, {pitch:.6f}, {yaw:.6f}]',
             f'    grid_resolution: {g.resolution}', f'    grid_width: {g.width}',
             f'    grid_height: {g.height}', f'    grid_origin_x: {g.origin_x}',
             f'    grid_origin_y: {g.origin_y}', f'    base_frame_id: "{g.frame_id}"']
    path.write_text('\n'.join(lines) + '\n')
    return path


class Evaluator:
    """Collects outputs and ground truth by stamp (runs in this process)."""

    def __init__(self, node):
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from panoptic_ros.msg import ClassTable, DetectionArray, PanopticSegmentation
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node = node
        self.pred, self.gt, self.grid, self.gt_grid, self.latency = {}, {}, {}, {}, []
        self.detections = {}
        self.class_info = None
        self.first = self.last = None
        # the node computes only outputs somebody subscribes to: frames sent before these
        # are matched would be skipped, so the camera starts once they are (ready())
        self.output_subs = [
            node.create_subscription(PanopticSegmentation, 'panoptic', self.on_pred, reliable),
            node.create_subscription(OccupancyGrid, 'occupancy', self.on_grid, latched),
            node.create_subscription(DetectionArray, 'detections', self.on_detections,
                                     reliable)]
        node.create_subscription(PanopticSegmentation, 'ground_truth/panoptic',
                                 lambda m: self.gt.setdefault(key(m), m), reliable)
        node.create_subscription(OccupancyGrid, 'ground_truth/occupancy',
                                 lambda m: self.gt_grid.setdefault(key(m), m), reliable)
        node.create_subscription(ClassTable, 'class_info', self.on_class_info, latched)

    def ready(self):
        """The node is up and its outputs are matched to this process's subscriptions."""
        return self.class_info is not None and \
            all(sub.get_publisher_count() > 0 for sub in self.output_subs)

    def on_class_info(self, msg):
        self.class_info = msg

    def on_pred(self, msg):
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.latency.append(now - stamp)
        self.first = self.first or now
        self.last = now
        self.pred[key(msg)] = msg

    def on_grid(self, msg):
        self.grid[key(msg)] = msg

    def on_detections(self, msg):
        self.detections[key(msg)] = msg


def key(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def grid_array(msg):
    return np.frombuffer(bytes(msg.data), np.int8).reshape(msg.info.height, msg.info.width)


def segments_dict(msg):
    return {s.id: {'id': s.id, 'category_id': s.category_id} for s in msg.segments}


def label_array(msg):
    from panoptic_ros.ros.image_codec import image_to_numpy
    return image_to_numpy(msg.label)


def report(ev, sequence, frames_sent, out):
    """Scores and pictures; returns the report text."""
    categories = {c.id: {'name': c.name, 'isthing': c.is_thing} for c in CLASSES}
    evaluator = PanopticEvaluator(categories)
    matched = sorted(set(ev.pred) & set(ev.gt))
    for k in matched:
        evaluator.add(label_array(ev.gt[k]), segments_dict(ev.gt[k]),
                      label_array(ev.pred[k]), segments_dict(ev.pred[k]))
    pq = evaluator.panoptic_quality()
    miou, _ = evaluator.mean_iou()
    grids = sorted(set(ev.grid) & set(ev.gt_grid))
    occ = [occupancy_scores(grid_array(ev.grid[k]), grid_array(ev.gt_grid[k])) for k in grids]
    lat = np.array(ev.latency) * 1000
    fps = (len(ev.latency) - 1) / (ev.last - ev.first) if len(ev.latency) > 1 else 0.0
    ids_ok = all(
        {d.instance_id for d in ev.detections[k].detections} <=
        {s.id for s in ev.pred[k].segments if s.is_thing}
        for k in set(ev.detections) & set(ev.pred))
    lines = ['# panoptic_ros demo', '',
             f'sim camera -> panoptic_node -> evaluator over DDS; {frames_sent} frames sent '
             f'at {sequence.fps:g} Hz (640x480), {len(ev.pred)} panoptic outputs received, '
             f'{len(matched)} matched to ground truth.', '',
             '| metric | value |', '|---|---|',
             f'| output rate | {fps:.1f} FPS |',
             f'| latency image stamp -> panoptic received, p50 / p95 | '
             f'{np.percentile(lat, 50):.0f} / {np.percentile(lat, 95):.0f} ms |'
             if len(lat) else '| latency | no outputs |',
             f"| PQ (things / stuff) | {pq['all']['pq']:.1f} ({pq['things']['pq']:.1f} / "
             f"{pq['stuff']['pq']:.1f}) |",
             f"| SQ / RQ | {pq['all']['sq']:.1f} / {pq['all']['rq']:.1f} |",
             f'| mIoU | {miou:.1f} |']
    if occ:
        lines += [f"| occupancy free IoU | {np.mean([o['free_iou'] for o in occ]):.1f} |",
                  f"| occupancy occupied IoU | {np.mean([o['occupied_iou'] for o in occ]):.1f} |"]
    lines += [f'| detection ids are panoptic segment ids | {"yes" if ids_ok else "NO"} |', '']
    text = '\n'.join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'demo_report.md').write_text(text + '\n')
    # pictures: a few overlays, and the last grid next to its ground truth
    if matched:
        picks = [matched[i] for i in np.linspace(0, len(matched) - 1, min(4, len(matched)),
                                                 dtype=int)]
        tiles = []
        colors = class_colors()
        for k in picks:   # ground truth | prediction, instance boundaries drawn
            pred, gt = label_array(ev.pred[k]), label_array(ev.gt[k])
            grey = np.full(pred.shape + (3,), 80, np.uint8)
            tiles.append(np.concatenate([
                overlay(grey, colorize_panoptic(gt, LABEL_DIVISOR, colors), 0.8, gt),
                overlay(grey, colorize_panoptic(pred, LABEL_DIVISOR, colors), 0.8, pred)], 1))
        cv2.imwrite(str(out / 'demo_overlays.png'),
                    cv2.cvtColor(np.concatenate(tiles, 0)[::2, ::2], cv2.COLOR_RGB2BGR))
    if grids:
        k = grids[len(grids) // 2]
        both = np.concatenate([occupancy_to_rgb(grid_array(ev.grid[k]), 2),
                               np.full((400, 8, 3), 255, np.uint8),
                               occupancy_to_rgb(grid_array(ev.gt_grid[k]), 2)], 1)
        cv2.imwrite(str(out / 'demo_occupancy.png'), cv2.cvtColor(both, cv2.COLOR_RGB2BGR))
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(prog='panoptic-ros-demo', description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=60)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--out', type=Path, default=Path('out'))
    parser.add_argument('--model', type=Path, default=None)
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--timeout', type=float, default=300.0)
    args = parser.parse_args(argv)
    model = args.model or default_model_path()
    if not model.is_file():
        print(f'demo: model {model} not found', file=sys.stderr)
        return 2
    seq_dir = args.out / 'demo' / f'sequence_{DEMO_SEED}_{args.frames}'
    if not (seq_dir / 'sequence.json').is_file():
        print(f'rendering a {args.frames}-frame driving sequence to {seq_dir} (once) ...',
              flush=True)
        render_sequence(seq_dir, DEMO_SEED, args.frames, fps=args.rate, config=SimConfig())
    sequence = Sequence(seq_dir)
    work = Path(tempfile.mkdtemp(prefix='panoptic_demo_'))
    env = isolated_ros_env(pick_domain_id(), work / 'ros_home')
    params = node_params(sequence, model.resolve(), args.backend, work / 'params.yaml')
    import rclpy
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'RMW_IMPLEMENTATION',
                                           'FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_HOME')})
    rclpy.init()
    node = rclpy.create_node('panoptic_demo_evaluator')
    ev = Evaluator(node)
    procs = []
    try:
        print(f'starting panoptic_node ({args.backend}, {model.name}) ...', flush=True)
        procs.append(subprocess.Popen(
            [sys.executable, '-m', 'panoptic_ros.ros.panoptic_node', '--ros-args',
             '--params-file', str(params)], env=env))
        deadline = time.monotonic() + 120
        while not ev.ready() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.2)
            if procs[0].poll() is not None:
                print('demo: panoptic_node exited during start-up', file=sys.stderr)
                return 1
        if not ev.ready():
            print('demo: panoptic_node did not come up within 120 s', file=sys.stderr)
            return 1
        print(f'replaying {len(sequence)} frames at {args.rate:g} Hz ...', flush=True)
        camera = subprocess.Popen(
            [sys.executable, '-m', 'panoptic_ros.ros.sim_camera_node', '--ros-args',
             '-p', f'sequence:={seq_dir.resolve()}', '-p', f'rate:={args.rate}',
             '-p', 'loop:=false', '-p', 'wait_for_subscribers:=true'], env=env)
        procs.append(camera)
        deadline = time.monotonic() + args.timeout
        while camera.poll() is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        end = time.monotonic() + 3.0     # the last frames still in flight
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    text = report(ev, sequence, len(sequence), args.out)
    print(text)
    print(f'wrote {args.out}/demo_report.md, demo_overlays.png, demo_occupancy.png')
    return 0 if ev.pred else 1


if __name__ == '__main__':
    sys.exit(main())
