"""The demo (README's main job): a camera -> panoptic_node -> evaluator, over DDS.

  python -m panoptic_ros.ros.demo [--frames 60] [--rate 10] [--out out] [--model PATH]
                              [--backend onnxruntime_int8] [--timeout 300]
  python -m panoptic_ros.ros.demo --video FILE [--fov 60] [--out DIR] ...

1. Sim (default): renders a driving sequence once (out/demo/sequence_*; reused afterwards).
   Video: reads the file's rate, length and first frame.
2. Starts panoptic_node (shipped model) in an isolated ROS domain (localhost Fast DDS
   profile), sends it WARMUP_FRAMES frames and waits for their answers, then starts the
   camera: sim_camera_node replaying the sequence, or camera_node playing the file.
3. This process subscribes to the camera images, the node's outputs and (sim) the ground
   truth, and writes out/demo_report.md (frames answered, FPS, p50/p95 latency from image
   stamp to output; sim: PQ / SQ / RQ, mIoU, occupancy IoU), out/demo_overlays.png (camera |
   prediction | ground truth of sampled frames, with a legend), out/demo_animation.gif and
   (sim) out/demo_occupancy.png (predicted grid next to the ground truth, in metres).
The node and the camera are stopped at the end; it finishes on its own.
"""

import argparse
import collections
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from panoptic_ros.core.camera_model import (camera_info_dict, intrinsics_from_fov,
                                            rpy_from_base_optical)
from panoptic_ros.core.metrics import occupancy_scores, PanopticEvaluator
from panoptic_ros.core.settings import default_model_path, Settings
from panoptic_ros.core.sim.sequence import render_sequence, Sequence
from panoptic_ros.core.sim.taxonomy import class_colors, CLASSES, LABEL_DIVISOR
from panoptic_ros.core.sim.world import SimConfig
from panoptic_ros.core.visualization import draw_panoptic, legend
from panoptic_ros.demo_figures import montage, occupancy_figure, titled, write_animation
from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id

DEMO_SEED = 11


def node_params(T, grid, model, backend, path):
    """panoptic_node parameters for a camera at T_base_optical T (its rpy and position)
    and, for the sim, the ground truth's grid."""
    roll, pitch, yaw = rpy_from_base_optical(T)
    lines = ['panoptic_node:', '  ros__parameters:',
             f'    model_path: "{model}"', f'    backend: "{backend}"',
             '    use_tf: false',
             f'    camera_xyz: [{T[0, 3]:.6f}, {T[1, 3]:.6f}, {T[2, 3]:.6f}]',
             f'    camera_rpy: [{roll:.6f}, {pitch:.6f}, {yaw:.6f}]']
    if grid is not None:
        lines += [f'    grid_resolution: {grid.resolution}', f'    grid_width: {grid.width}',
                  f'    grid_height: {grid.height}', f'    grid_origin_x: {grid.origin_x}',
                  f'    grid_origin_y: {grid.origin_y}', f'    base_frame_id: "{grid.frame_id}"']
    path.write_text('\n'.join(lines) + '\n')
    return path


WARMUP_FRAMES = 3   # stamped 1 s, 2 s, 3 s: apart from any camera's wall-clock stamps


def is_warmup(k):
    return k[0] <= WARMUP_FRAMES


class Evaluator:
    """Collects the node's outputs, the camera images and the ground truth by stamp (runs in
    this process). Of every `keep_every` answered frames one keeps its messages for the
    pictures and scores (all of them in the sim demo)."""

    def __init__(self, node, keep_every=1):
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import (DurabilityPolicy, QoSProfile, qos_profile_sensor_data,
                               ReliabilityPolicy)
        from sensor_msgs.msg import Image
        from panoptic_ros.msg import ClassTable, DetectionArray, PanopticSegmentation
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node = node
        self.keep_every = keep_every
        self.pred, self.gt, self.grid, self.gt_grid, self.latency = {}, {}, {}, {}, []
        self.images, self.recent_images = {}, collections.OrderedDict()
        self.detections, self.frame_number = {}, {}
        self.warm = set()
        self.answered = 0
        self.class_info = None
        self.first = self.last = None
        # the node computes only outputs somebody subscribes to: frames sent before these
        # are matched would be skipped, so the camera starts once they are (ready())
        self.output_subs = [
            node.create_subscription(PanopticSegmentation, 'panoptic', self.on_pred, reliable),
            node.create_subscription(OccupancyGrid, 'occupancy', self.on_grid, latched),
            node.create_subscription(DetectionArray, 'detections', self.on_detections,
                                     reliable)]
        node.create_subscription(Image, 'image', self.on_image, qos_profile_sensor_data)
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

    def on_image(self, msg):
        self.recent_images[key(msg)] = msg   # the last few, until their answer arrives
        while len(self.recent_images) > 30:
            self.recent_images.popitem(last=False)

    def on_pred(self, msg):
        k = key(msg)
        if is_warmup(k):
            self.warm.add(k)
            return
        from panoptic_ros.ros.messages import stamp_seconds
        now = time.time()
        self.latency.append(now - stamp_seconds(msg.header.stamp))
        self.first = self.first or now
        self.last = now
        image = self.recent_images.pop(k, None)
        if self.answered % self.keep_every == 0:
            self.pred[k] = msg
            self.frame_number[k] = self.answered
            if image is not None:
                self.images[k] = image
        self.answered += 1

    def on_grid(self, msg):
        if not is_warmup(key(msg)):
            self.grid[key(msg)] = msg

    def on_detections(self, msg):
        if not is_warmup(key(msg)):
            self.detections[key(msg)] = msg


def warm_up(node, ev, rgb, info, frame_id, timeout=120.0):
    """Send WARMUP_FRAMES frames (the camera's first image and camera_info) to the node and
    wait for each answer, so that the replay meets a node past its first, slow inferences
    and with its occupancy projector built. Returns whether every one was answered."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from panoptic_ros.ros.image_codec import numpy_to_image
    from panoptic_ros.ros.messages import camera_info_msg
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, 'image', qos)
    info_pub = node.create_publisher(CameraInfo, 'camera_info', qos)
    deadline = time.monotonic() + timeout
    try:
        for sec in range(1, WARMUP_FRAMES + 1):
            header = Header(frame_id=frame_id)
            header.stamp.sec = sec
            sent = -math.inf
            while (sec, 0) not in ev.warm:
                if time.monotonic() > deadline:
                    return False
                if time.monotonic() - sent > 2.0:   # again, should DDS have lost it
                    info_pub.publish(camera_info_msg(info, header))
                    image_pub.publish(numpy_to_image(rgb, 'rgb8', header))
                    sent = time.monotonic()
                rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_publisher(image_pub)
        node.destroy_publisher(info_pub)
    return True


def key(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def grid_array(msg):
    return np.frombuffer(bytes(msg.data), np.int8).reshape(msg.info.height, msg.info.width)


def segments_dict(msg):
    return {s.id: {'id': s.id, 'category_id': s.category_id} for s in msg.segments}


def label_array(msg):
    from panoptic_ros.ros.image_codec import image_to_numpy
    return image_to_numpy(msg.label)


def scores(ev, sequence, frames_sent):
    """Report lines (markdown) of what the node answered and, against the sim's ground truth
    (sequence not None), how well."""
    lat = np.array(ev.latency) * 1000
    fps = (len(ev.latency) - 1) / (ev.last - ev.first) if len(ev.latency) > 1 else 0.0
    source = f'{sequence.fps:g} Hz sim camera' if sequence is not None else 'video file'
    lines = ['# panoptic_ros demo', '',
             f'{source} -> panoptic_node -> evaluator over DDS; {frames_sent} frames sent, '
             f'{len(ev.latency)} answered (after {WARMUP_FRAMES} warm-up frames).', '',
             '| metric | value |', '|---|---|',
             f'| frames answered | {len(ev.latency)} of {frames_sent} |',
             f'| output rate | {fps:.1f} FPS |',
             f'| latency image stamp -> panoptic received, p50 / p95 | '
             f'{np.percentile(lat, 50):.0f} / {np.percentile(lat, 95):.0f} ms |'
             if len(lat) else '| latency | no outputs |']
    if sequence is not None:
        categories = {c.id: {'name': c.name, 'isthing': c.is_thing} for c in CLASSES}
        evaluator = PanopticEvaluator(categories)
        matched = sorted(set(ev.pred) & set(ev.gt))
        for k in matched:
            evaluator.add(label_array(ev.gt[k]), segments_dict(ev.gt[k]),
                          label_array(ev.pred[k]), segments_dict(ev.pred[k]))
        pq = evaluator.panoptic_quality()
        miou, _ = evaluator.mean_iou()
        lines += [f'| frames matched to ground truth | {len(matched)} |',
                  f"| PQ (things / stuff) | {pq['all']['pq']:.1f} ({pq['things']['pq']:.1f} / "
                  f"{pq['stuff']['pq']:.1f}) |",
                  f"| SQ / RQ | {pq['all']['sq']:.1f} / {pq['all']['rq']:.1f} |",
                  f'| mIoU | {miou:.1f} |']
        grids = sorted(set(ev.grid) & set(ev.gt_grid))
        occ = [occupancy_scores(grid_array(ev.grid[k]), grid_array(ev.gt_grid[k]))
               for k in grids]
        if occ:
            lines += [f"| occupancy free IoU | {np.mean([o['free_iou'] for o in occ]):.1f} |",
                      f"| occupancy occupied IoU | "
                      f"{np.mean([o['occupied_iou'] for o in occ]):.1f} |"]
    ids_ok = all(
        {d.instance_id for d in ev.detections[k].detections} <=
        {s.id for s in ev.pred[k].segments if s.is_thing}
        for k in set(ev.detections) & set(ev.pred))
    lines += [f'| detection ids are panoptic segment ids | {"yes" if ids_ok else "NO"} |', '']
    return lines


def frame_tiles(ev, k, names, colors):
    """[camera | prediction | ground truth] of frame k, each drawn over the camera image."""
    from panoptic_ros.ros.image_codec import image_to_numpy
    rgb = image_to_numpy(ev.images[k], 'rgb8')
    divisor = ev.class_info.label_divisor
    tiles = [rgb, draw_panoptic(rgb, label_array(ev.pred[k]), divisor, colors, names)]
    if k in ev.gt:
        tiles.append(draw_panoptic(rgb, label_array(ev.gt[k]), LABEL_DIVISOR, colors, names))
    return tiles


def pictures(ev, out, camera_info, T_base_optical, fps):
    """demo_overlays.png (sampled frames: camera, prediction, ground truth, legend),
    demo_animation.gif (every kept frame) and, with ground truth, demo_occupancy.png.
    Returns the names of the files written."""
    info = ev.class_info
    names = list(info.names)
    # the simulator's colours for its classes (readable over a camera image), else the node's
    sim_colors = dict(zip(['void'] + [c.name for c in CLASSES], class_colors()))
    colors = [sim_colors.get(n, c) for n, c in zip(names, zip(info.r, info.g, info.b))]
    shown = sorted(k for k in ev.pred if k in ev.images)
    tiles = {k: frame_tiles(ev, k, names, colors) for k in shown}   # drawn once per frame
    written = []
    if shown:
        titles = ['camera', 'prediction (shipped model)', 'ground truth (simulator)']
        picks = [shown[i] for i in np.linspace(0, len(shown) - 1, min(4, len(shown)),
                                               dtype=int)]
        rows = [[titled(t, f'{title}, frame {ev.frame_number[k]}')
                 for t, title in zip(tiles[k], titles)] for k in picks]
        picture = montage(rows)
        picture = np.concatenate([picture, legend(names, colors, picture.shape[1],
                                                  list(info.is_thing))], 0)
        scale = min(1.0, 1280 / picture.shape[1])
        picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / 'demo_overlays.png'), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        # the animation: every kept frame, each tile about 320 pixels wide (a few MB)
        frames = [montage([tiles[k]]) for k in shown]
        write_animation(out / 'demo_animation.gif', frames, fps / ev.keep_every,
                        max_width=330 * len(rows[0]))
        written += ['demo_overlays.png', 'demo_animation.gif']
    grids = sorted(set(ev.grid) & set(ev.gt_grid))
    if grids:
        k = grids[len(grids) // 2]
        g = ev.grid[k].info
        occupancy_figure(out / 'demo_occupancy.png',
                         [(f'predicted (frame {ev.frame_number.get(k, "?")})',
                           grid_array(ev.grid[k])),
                          ('ground truth (simulator)', grid_array(ev.gt_grid[k]))],
                         g.resolution, g.origin.position.x, g.origin.position.y,
                         T_base_optical, camera_info['k'], camera_info['width'])
        written.append('demo_occupancy.png')
    return written


class VideoFile:
    """What the demo needs to know of a video file: rate, length and its first frame."""

    def __init__(self, path):
        capture = cv2.VideoCapture(str(path))
        ok, bgr = capture.read()
        if not ok:
            raise ValueError(f'OpenCV cannot read a frame of {path}')
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        self.frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.first = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        capture.release()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='panoptic-ros-demo', description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=60, help='sim: sequence length')
    parser.add_argument('--rate', type=float, default=10.0, help='sim: camera rate in Hz')
    parser.add_argument('--video', type=Path, default=None,
                        help='a video file to feed through camera_node instead of the sim')
    parser.add_argument('--fov', type=float, default=60.0,
                        help='video: vertical field of view of the pinhole guess, degrees')
    parser.add_argument('--out', type=Path, default=Path('out'))
    parser.add_argument('--model', type=Path, default=None)
    parser.add_argument('--backend', default='onnxruntime_int8')
    parser.add_argument('--timeout', type=float, default=300.0)
    args = parser.parse_args(argv)
    model = args.model or default_model_path()
    if not model.is_file():
        print(f'demo: model {model} not found', file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix='panoptic_demo_'))
    if args.video is None:
        seq_dir = args.out / 'demo' / f'sequence_{DEMO_SEED}_{args.frames}'
        if not (seq_dir / 'sequence.json').is_file():
            print(f'rendering a {args.frames}-frame driving sequence to {seq_dir} (once) ...',
                  flush=True)
            render_sequence(seq_dir, DEMO_SEED, args.frames, fps=args.rate, config=SimConfig())
        sequence = Sequence(seq_dir)
        frames, fps, first = len(sequence), args.rate, sequence.image(0)
        camera_info, T = sequence.camera_info, sequence.T_base_optical
        camera = [sys.executable, '-m', 'panoptic_ros.ros.sim_camera_node', '--ros-args',
                  '-p', f'sequence:={seq_dir.resolve()}', '-p', f'rate:={fps}']
        keep_every = 1
    else:
        try:
            video = VideoFile(args.video)
        except ValueError as exc:
            print(f'demo: {exc}', file=sys.stderr)
            return 2
        sequence, frames, fps, first = None, video.frames, video.fps, video.first
        h, w = first.shape[:2]
        camera_info = camera_info_dict(intrinsics_from_fov(w, h, args.fov), w, h)
        T = Settings.from_params({}).T_base_optical[0]
        camera = [sys.executable, '-m', 'panoptic_ros.ros.camera_node', '--ros-args',
                  '-p', f'source:={args.video.resolve()}', '-p', f'rate:={fps}',
                  '-p', f'fallback_fov_deg:={args.fov}']
        keep_every = max(1, math.ceil(frames / 60))   # at most ~60 frames kept and drawn
    env = isolated_ros_env(pick_domain_id(), work / 'ros_home')
    params = node_params(T, sequence.grid if sequence else None, model.resolve(), args.backend,
                         work / 'params.yaml')
    import rclpy
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'RMW_IMPLEMENTATION',
                                           'FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_HOME')})
    rclpy.init()
    node = rclpy.create_node('panoptic_demo_evaluator')
    ev = Evaluator(node, keep_every)
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
        if not ev.ready() or not warm_up(node, ev, first, camera_info, 'camera_optical'):
            print('demo: panoptic_node did not come up and answer its warm-up frames within '
                  '120 s', file=sys.stderr)
            return 1
        print(f'replaying {frames} frames at {fps:g} Hz ...', flush=True)
        # the first frame waits for two image subscribers: the node and this evaluator
        camera = subprocess.Popen(camera + ['-p', 'loop:=false',
                                            '-p', 'wait_for_subscribers:=2'], env=env)
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
    args.out.mkdir(parents=True, exist_ok=True)
    text = '\n'.join(scores(ev, sequence, frames))
    (args.out / 'demo_report.md').write_text(text + '\n')
    print(text)
    written = pictures(ev, args.out, camera_info, T, fps)
    print(f'wrote {args.out}/demo_report.md, ' + ', '.join(written))
    return 0 if ev.latency else 1


if __name__ == '__main__':
    sys.exit(main())
