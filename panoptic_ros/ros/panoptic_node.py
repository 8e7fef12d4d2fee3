"""panoptic_node: camera images in; panoptic labels, detections and an occupancy grid out.

Thin ROS layer: declares the parameters of panoptic_ros.core.settings, builds the pipeline
(network backend -> decode -> panoptic head -> occupancy projection), converts messages.

Subscribes (relative names, remappable):
  image            sensor_msgs/Image, sensor-data QoS (reliability/depth by parameter)
  image/compressed sensor_msgs/CompressedImage (when use_compressed)
  camera_info      sensor_msgs/CameraInfo
Publishes (each stamped with the input image's header stamp):
  panoptic           panoptic_ros/PanopticSegmentation (32SC1 ids, image frame_id)
  semantic           sensor_msgs/Image mono8 (mono16 beyond 255 classes) category ids
  panoptic/colored   sensor_msgs/Image rgb8 overlay for rviz
  detections         panoptic_ros/DetectionArray (instance ids = panoptic segment ids,
                     ground positions in base_frame_id when the grid is computed)
  detections/markers visualization_msgs/MarkerArray (cylinders + labels at ground positions)
  occupancy          nav_msgs/OccupancyGrid in base_frame_id (reliable, transient local)
  class_info         panoptic_ros/ClassTable (reliable, transient local: latched)
  /diagnostics       diagnostic_msgs/DiagnosticArray, about 1 Hz
Outputs nobody subscribes to are not computed. Newest frame wins: callbacks only store the
latest image; one worker thread processes it; replaced frames are counted as dropped.
"""

import collections
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rcl_interfaces.msg import ParameterDescriptor
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_ros.core.backends import (BackendUnavailable, configure_torch_threads,
                                        make_backend)
from panoptic_ros.core.camera_model import (camera_info_problem, PinholeCamera,
                                            transform_from_quaternion)
from panoptic_ros.core.checkpoint import CheckpointError, load_checkpoint
from panoptic_ros.core.inference import check_finite, FramePipeline
from panoptic_ros.core.occupancy import OccupancyProjector
from panoptic_ros.core.settings import PARAMETERS, Settings
from panoptic_ros.core.visualization import colorize_panoptic, overlay
from panoptic_ros.msg import ClassTable, Detection, DetectionArray, PanopticSegmentation
from panoptic_ros.ros.image_codec import (
    check_image, compressed_to_numpy, image_to_numpy, ImageFormatError, numpy_to_image)
from panoptic_ros.ros.messages import occupancy_msg, panoptic_msg

RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
               'reliable': ReliabilityPolicy.RELIABLE}
STAGES = ('convert', 'preprocess', 'network', 'head', 'occupancy', 'publish')


def _palette(n):
    """Distinct RGB colours for n classes (index 0 = void, black)."""
    rng = np.random.default_rng(7)
    return [(0, 0, 0)] + [tuple(int(c) for c in rng.integers(40, 255, 3)) for _ in range(n)]


class StageStats:
    """Rolling per-stage latencies and event counters for diagnostics."""

    def __init__(self, window=200):
        self.latency = {s: collections.deque(maxlen=window) for s in STAGES}
        self.counters = collections.Counter()
        self.inputs = collections.deque(maxlen=window)
        self.outputs = collections.deque(maxlen=window)
        self.lock = threading.Lock()

    def add(self, stage, seconds):
        with self.lock:
            self.latency[stage].append(seconds)

    def count(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def reset(self, name):
        with self.lock:
            self.counters[name] = 0

    @staticmethod
    def rate(stamps, now, window=5.0):
        recent = [t for t in stamps if now - t <= window]
        return len(recent) / window


class PanopticNode(Node):
    def __init__(self, **kwargs):
        super().__init__('panoptic_node', **kwargs)
        params = {}
        for name, (default, description) in PARAMETERS.items():
            ptype = None
            if isinstance(default, list):
                ptype = Parameter.Type.STRING_ARRAY if isinstance(default[0], str) else \
                    Parameter.Type.DOUBLE_ARRAY
            descriptor = ParameterDescriptor(description=description)
            if ptype is not None:
                params[name] = self.declare_parameter(name, ptype, descriptor).value
                if params[name] is None:
                    params[name] = default
            else:
                params[name] = self.declare_parameter(name, default, descriptor).value
        try:
            self.settings = s = Settings.from_params(params)
        except ValueError as exc:
            raise ParameterException(str(exc), list(params)) from exc
        log = self.get_logger()
        # network and pipeline (start-up faults end here with a message naming the file)
        model, meta = load_checkpoint(s.model_path)
        self.model_name = s.model_path.name
        backend = make_backend(s.backend, model, s.device, s.half, s.cache_dir,
                               s.strict_device, threads=s.threads or None)
        configure_torch_threads(backend, s.threads)
        self.pipeline = FramePipeline(backend, s.decode, s.head)
        self.classes = list(model.config.classes)
        self.is_thing = list(model.config.is_thing)
        self.label_divisor = s.head.label_divisor
        self.occupancy_config = s.occupancy_config(self.classes, self.label_divisor)
        self.colors = _palette(len(self.classes))
        self.projector = None
        self.projector_key = None
        self.camera_info = None
        self.camera_info_problem = 'no camera_info received yet'
        self.tf_buffer = self._make_tf(s)
        log.info(f'model {s.model_path} ({model.config.encoder}, {len(self.classes)} classes, '
                 f'input {model.config.input_size}) on backend {backend.name} '
                 f'({backend.device})')
        self.backend_name, self.device_name = backend.name, str(backend.device)
        if s.device == 'cuda' and backend.device.type != 'cuda':
            log.warning('device cuda requested but CUDA is not available: running on the CPU '
                        '(set strict_device to fail instead)')
        # I/O
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=s.image_queue_depth,
                               reliability=RELIABILITY[s.image_reliability])
        self.create_subscription(Image, 'image', self.on_image, image_qos)
        if s.use_compressed:
            self.create_subscription(CompressedImage, 'image/compressed', self.on_compressed,
                                     image_qos)
        self.create_subscription(CameraInfo, 'camera_info', self.on_camera_info, image_qos)
        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {}
        wanted = set(s.outputs)
        for name, topic, mtype, qos in (
                ('panoptic', 'panoptic', PanopticSegmentation, out_qos),
                ('semantic', 'semantic', Image, out_qos),
                ('colored', 'panoptic/colored', Image, out_qos),
                ('detections', 'detections', DetectionArray, out_qos),
                ('markers', 'detections/markers', MarkerArray, out_qos),
                ('occupancy', 'occupancy', OccupancyGrid, latched)):
            if name in wanted:
                self.pubs[name] = self.create_publisher(mtype, topic, qos)
        self.class_pub = self.create_publisher(ClassTable, 'class_info', latched)
        self.class_pub.publish(self._class_table())
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.stats = StageStats()
        self._last_warning = {}
        self.create_timer(1.0, self.publish_diagnostics)
        # newest frame wins: one slot, one worker
        self.latest = None
        self.cond = threading.Condition()
        self.running = True
        self.worker = threading.Thread(target=self.work, name='panoptic_worker', daemon=True)
        self.worker.start()

    # ---- inputs (executor thread: store only) -------------------------------------------
    def _store(self, kind, msg):
        self.stats.inputs.append(time.monotonic())
        with self.cond:
            if self.latest is not None:
                self.stats.count('dropped_newer_frame')
            self.latest = (kind, msg)
            self.cond.notify()

    def on_image(self, msg):
        self.stats.count('received_images')
        try:   # header fields only: malformed images never displace a good pending frame
            check_image(msg, 'rgb8')
        except ImageFormatError as exc:
            self._bad_image(exc)
            return
        self._store('raw', msg)

    def on_compressed(self, msg):
        self.stats.count('received_images')
        self._store('compressed', msg)   # decoded (and checked) by the worker

    def _bad_image(self, exc):
        self.stats.count(f'dropped_bad_image_{exc.reason}')
        self._warn_per_key(exc.reason, f'dropped image: {exc}')

    def _warn_per_key(self, key, text, period=5.0):
        """A warning rate-limited per kind of problem (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -period) >= period:
            self._last_warning[key] = now
            self.get_logger().warning(text)

    def on_camera_info(self, msg):
        self.stats.count('received_camera_info')
        problem = camera_info_problem(msg.width, msg.height, msg.k, msg.d)
        if problem is not None:
            self.stats.count('dropped_bad_camera_info')
            self.get_logger().warning(f'{problem}: occupancy disabled until a valid '
                                      'camera_info arrives', throttle_duration_sec=5.0)
            self.camera_info_problem = problem
            self.camera_info = None
            return
        self.camera_info = msg
        self.camera_info_problem = None

    def _make_tf(self, s):
        if not s.use_tf:
            return None
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().info('tf2_ros is not available: camera extrinsics from the '
                                   'camera_xyz / camera_rpy parameters')
            return None
        buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(buffer, self)
        return buffer

    # ---- worker ----------------------------------------------------------------------------
    def work(self):
        while True:
            with self.cond:
                while self.latest is None and self.running:
                    self.cond.wait(0.5)
                if not self.running:
                    return
                kind, msg = self.latest
                self.latest = None
            try:
                ok = self.process(kind, msg)
            except Exception as exc:   # one bad frame never kills the node
                if not self.context.ok():   # shut down while in flight: not a failure
                    self.stats.count('abandoned_at_shutdown')
                    return
                ok = False
                self.stats.count('failed_pipeline_exception')
                self.get_logger().error(f'frame failed: {type(exc).__name__}: {exc}',
                                        throttle_duration_sec=5.0)
            # a frame that failed in the pipeline (exception, non-finite output) counts
            # towards ERROR; bad input and frames nobody wants do not
            if ok is False:
                self.stats.count('consecutive_failures')
            elif ok:
                self.stats.reset('consecutive_failures')

    def _subscribed(self, name):
        pub = self.pubs.get(name)
        return pub is not None and pub.get_subscription_count() > 0

    def _convert(self, kind, msg):
        """(RGB uint8 [h, w, 3], (h, w) of the message) of an image message, or
        (None, None) when it cannot be used (counted, logged). Images larger than
        max_image_pixels are resized down (aspect kept)."""
        try:
            if kind == 'compressed':
                rgb = compressed_to_numpy(msg, 'rgb8')
            else:
                rgb = image_to_numpy(msg, 'rgb8')
        except ImageFormatError as exc:
            self._bad_image(exc)
            return None, None
        except (ValueError, TypeError, cv2.error) as exc:
            self._bad_image(ImageFormatError('decode', str(exc)))
            return None, None
        if rgb.size == 0:
            self._bad_image(ImageFormatError('zero_size', 'image has zero size'))
            return None, None
        original = rgb.shape[:2]
        pixels = rgb.shape[0] * rgb.shape[1]
        if pixels > self.settings.max_image_pixels:
            f = (self.settings.max_image_pixels / pixels) ** 0.5
            size = (max(1, int(rgb.shape[1] * f)), max(1, int(rgb.shape[0] * f)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            self.stats.count('resized_large_image')
            self._warn_per_key('resized', f'image of {original[1]}x{original[0]} pixels '
                               f'resized to {size} (max_image_pixels '
                               f'{self.settings.max_image_pixels})', 30.0)
        return np.ascontiguousarray(rgb), original

    def process(self, kind, msg):
        """One frame through the pipeline. Returns True when published, False when the
        pipeline failed on it (non-finite output), None when it was not for processing."""
        header = msg.header
        t0 = time.perf_counter()
        rgb, original_size = self._convert(kind, msg)
        if rgb is None:
            return None
        t1 = time.perf_counter()
        self.stats.add('convert', t1 - t0)
        wants = {name: self._subscribed(name) for name in self.pubs}
        if not any(wants.values()):
            self.stats.count('skipped_no_subscribers')
            return None
        result = self.pipeline(rgb)
        bad = check_finite({'sem_logits': result.network.sem_logits,
                            'boxes': result.network.boxes})
        if bad:
            self.stats.count('dropped_non_finite_output')
            self.get_logger().warning(f'non-finite network output in {bad}: frame skipped',
                                      throttle_duration_sec=5.0)
            return False
        for stage in ('preprocess', 'network', 'head'):
            self.stats.add(stage, result.timings[stage])
        out = result.panoptic
        panoptic = out.panoptic.cpu().numpy()
        # occupancy (also needed for the detections' ground positions)
        t2 = time.perf_counter()
        grid, ground = None, {}
        if wants.get('occupancy') or wants.get('detections') or wants.get('markers'):
            projector = self._projector(header, panoptic.shape, original_size)
            if projector is not None:
                grid, ground = projector(panoptic)
        t3 = time.perf_counter()
        self.stats.add('occupancy', t3 - t2)
        self._publish(header, rgb, out, panoptic, grid, ground, wants)
        self.stats.add('publish', time.perf_counter() - t3)
        self.stats.outputs.append(time.monotonic())
        self.stats.count('processed')
        return True

    def _extrinsics(self, header):
        """T_base_optical at the image stamp: tf2 when available, else the parameters."""
        s = self.settings
        if self.tf_buffer is None:
            return s.T_base_optical
        from rclpy.duration import Duration
        from rclpy.time import Time
        try:
            tf = self.tf_buffer.lookup_transform(s.grid.frame_id, header.frame_id,
                                                 Time.from_msg(header.stamp),
                                                 Duration(seconds=s.tf_timeout))
        except Exception as exc:   # tf2 raises several lookup exception types
            self.stats.count('occupancy_skipped_no_tf')
            self.get_logger().warning(f'no transform {s.grid.frame_id} <- {header.frame_id} '
                                      f'at the image stamp ({exc}): occupancy skipped',
                                      throttle_duration_sec=5.0)
            return None
        q, t = tf.transform.rotation, tf.transform.translation
        try:
            return transform_from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except ValueError as exc:
            self.stats.count('occupancy_skipped_no_tf')
            self.get_logger().warning(f'transform {s.grid.frame_id} <- {header.frame_id}: '
                                      f'{exc}', throttle_duration_sec=5.0)
            return None

    def _projector(self, header, image_size, original_size):
        """The occupancy projector for this camera model, extrinsics and image size (built
        when one of them changes). camera_info describes the image as sent (original_size);
        an image resized by the node gets correspondingly scaled intrinsics."""
        info = self.camera_info
        if info is None:
            self.stats.count('occupancy_skipped_camera_info')
            self.get_logger().warning(f'{self.camera_info_problem}: occupancy and ground '
                                      'positions disabled, other outputs continue',
                                      throttle_duration_sec=10.0)
            return None
        if (info.height, info.width) != tuple(original_size):
            self.stats.count('occupancy_skipped_camera_info')
            self.get_logger().warning(
                f'camera_info is {info.width}x{info.height} but the image is '
                f'{original_size[1]}x{original_size[0]}: occupancy disabled for this frame',
                throttle_duration_sec=10.0)
            return None
        T = self._extrinsics(header)
        if T is None:
            return None
        key = (tuple(info.k), tuple(info.d), tuple(image_size), tuple(original_size),
               np.round(T, 4).tobytes())
        if key != self.projector_key:
            try:
                camera = PinholeCamera.from_camera_info(info).scaled(image_size[1],
                                                                     image_size[0])
                self.projector = OccupancyProjector(
                    camera, T, self.settings.grid, self.occupancy_config,
                    len(self.classes) + 1)
            except ValueError as exc:
                self.stats.count('occupancy_skipped_camera_info')
                self.get_logger().warning(f'occupancy disabled: {exc}',
                                          throttle_duration_sec=10.0)
                return None
            self.projector_key = key
        return self.projector

    # ---- outputs ---------------------------------------------------------------------------
    def _publish(self, header, rgb, out, panoptic, grid, ground, wants):
        stamp_header = Header(stamp=header.stamp, frame_id=header.frame_id)
        segments = [dict(s, id=s['segment_id']) for s in out.segments()]
        if wants.get('panoptic'):
            self.pubs['panoptic'].publish(panoptic_msg(stamp_header, panoptic, segments,
                                                       self.label_divisor))
        if wants.get('semantic'):
            semantic = panoptic // self.label_divisor
            dtype, enc = (np.uint8, 'mono8') if len(self.classes) < 256 else \
                (np.uint16, 'mono16')
            self.pubs['semantic'].publish(numpy_to_image(semantic.astype(dtype), enc,
                                                         stamp_header))
        if wants.get('colored'):
            colored = colorize_panoptic(panoptic, self.label_divisor, self.colors)
            self.pubs['colored'].publish(numpy_to_image(overlay(rgb, colored, 0.5, panoptic),
                                                        'rgb8', stamp_header))
        base_header = Header(stamp=header.stamp, frame_id=self.settings.grid.frame_id)
        if wants.get('occupancy') and grid is not None:
            g = self.settings.grid
            self.pubs['occupancy'].publish(occupancy_msg(base_header, grid, g.resolution,
                                                         g.origin_x, g.origin_y))
        if wants.get('detections') or wants.get('markers'):
            detections = DetectionArray(header=stamp_header,
                                        base_frame_id=self.settings.grid.frame_id)
            for seg in segments:
                if not seg['is_thing']:
                    continue
                x1, y1, x2, y2 = seg['box']
                det = Detection(instance_id=int(seg['id']), class_id=int(seg['category_id']),
                                class_name=self.classes[seg['category_id'] - 1],
                                score=float(seg['score']), x1=float(x1), y1=float(y1),
                                x2=float(x2), y2=float(y2))
                if seg['id'] in ground:
                    det.has_ground_position = True
                    det.ground_x, det.ground_y = ground[seg['id']]
                detections.detections.append(det)
            if wants.get('detections'):
                self.pubs['detections'].publish(detections)
            if wants.get('markers'):
                self.pubs['markers'].publish(self._markers(base_header, detections))

    def _markers(self, header, detections):
        markers = MarkerArray()
        markers.markers.append(Marker(header=header, ns='panoptic', action=Marker.DELETEALL))
        for k, det in enumerate(d for d in detections.detections if d.has_ground_position):
            r, g, b = self.colors[det.class_id]
            body = Marker(header=header, ns='panoptic', id=2 * k, type=Marker.CYLINDER,
                          action=Marker.ADD)
            body.pose.position = Point(x=det.ground_x, y=det.ground_y, z=0.25)
            body.pose.orientation.w = 1.0
            body.scale.x = body.scale.y = 0.4
            body.scale.z = 0.5
            body.color.r, body.color.g, body.color.b, body.color.a = r / 255, g / 255, b / 255, 0.8
            label = Marker(header=header, ns='panoptic', id=2 * k + 1,
                           type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                           text=f'{det.class_name} {det.instance_id} {det.score:.2f}')
            label.pose.position = Point(x=det.ground_x, y=det.ground_y, z=0.8)
            label.pose.orientation.w = 1.0
            label.scale.z = 0.3
            label.color.r = label.color.g = label.color.b = label.color.a = 1.0
            markers.markers += [body, label]
        return markers

    def _class_table(self):
        msg = ClassTable(label_divisor=self.label_divisor)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.names = ['void'] + self.classes
        msg.is_thing = [False] + self.is_thing
        msg.r = [c[0] for c in self.colors]
        msg.g = [c[1] for c in self.colors]
        msg.b = [c[2] for c in self.colors]
        return msg

    # ---- diagnostics -----------------------------------------------------------------------
    def publish_diagnostics(self):
        now = time.monotonic()
        st = self.stats
        with st.lock:
            counters = dict(st.counters)
            latencies = {k: list(v) for k, v in st.latency.items()}
        in_rate = st.rate(list(st.inputs), now)
        out_rate = st.rate(list(st.outputs), now)
        status = DiagnosticStatus(name='panoptic_node: pipeline', hardware_id=self.device_name)
        values = [('backend', self.backend_name), ('device', self.device_name),
                  ('model', self.model_name), ('input_rate_hz', f'{in_rate:.2f}'),
                  ('output_rate_hz', f'{out_rate:.2f}')]
        for stage, samples in latencies.items():
            if samples:
                values.append((f'{stage}_ms_p50', f'{np.percentile(samples, 50) * 1e3:.2f}'))
                values.append((f'{stage}_ms_p95', f'{np.percentile(samples, 95) * 1e3:.2f}'))
        values += [(k, str(v)) for k, v in sorted(counters.items())]
        status.values = [KeyValue(key=k, value=v) for k, v in values]
        failing = counters.get('consecutive_failures', 0)
        if failing >= self.settings.max_consecutive_failures:
            status.level = DiagnosticStatus.ERROR
            status.message = f'the last {failing} frames failed in the pipeline'
        elif in_rate > 0 and out_rate < self.settings.min_output_rate:
            status.level = DiagnosticStatus.WARN
            status.message = f'output rate {out_rate:.1f} Hz below {self.settings.min_output_rate}'
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'ok' if in_rate > 0 else 'waiting for images'
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def stop(self):
        with self.cond:
            self.running = False
            self.cond.notify()
        self.worker.join(timeout=5.0)


def main(args=None):
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = PanopticNode()
        rclpy.spin(node)
    except (ParameterException, CheckpointError, BackendUnavailable) as exc:
        print(f'panoptic_node: {exc}', file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, SIGTERM
        pass
    except Exception as exc:   # start-up faults: a message, a non-zero exit
        print(f'panoptic_node: {type(exc).__name__}: {exc}', file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
