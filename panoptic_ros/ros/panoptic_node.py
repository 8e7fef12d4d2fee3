"""panoptic_node: camera images in; panoptic labels, detections and occupancy grids out.

A lifecycle node around core.perception.Perception, which does all the work: configure loads
the model and builds it, activate starts processing, deactivate stops it (the model stays
loaded), cleanup frees it; `autostart` (default) configures and activates at start-up.
Parameters: core.settings.PARAMETERS (live ones change with `ros2 param set`); topics and
QoS: ros.messages.OUTPUTS, per camera of the `cameras` parameter (ros.cameras). Each cycle
runs the newest frame of every camera through one batched network call; outputs nobody
subscribes to are not computed; newest frame wins.
"""

import sys
import time

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile
from diagnostic_msgs.msg import DiagnosticArray

from panoptic_ros.core.backends import BackendUnavailable
from panoptic_ros.core.checkpoint import CheckpointError
from panoptic_ros.core.health import (diagnostics_level, health_values, OK, StageStats,
                                      ThrottledWarnings, WARN)
from panoptic_ros.core.inference import NonFiniteOutput
from panoptic_ros.core.perception import Perception
from panoptic_ros.core.settings import PARAMETERS, Settings
from panoptic_ros.core.visualization import class_palette
from panoptic_ros.msg import ClassTable
from panoptic_ros.ros import messages
from panoptic_ros.ros.cameras import CameraInput, RobotPoses, sending_cameras, SharedGrids
from panoptic_ros.ros.extrinsics import Extrinsics
from panoptic_ros.ros.frame_worker import FrameWorker
from panoptic_ros.ros.image_codec import check_image, decode_rgb, ImageFormatError
from panoptic_ros.ros.parameters import (BadParameter, current_values, declare_parameters,
                                         settings_validator)
from panoptic_ros.ros.runner import run_node

START_ERRORS = (CheckpointError, BackendUnavailable)


class PanopticNode(LifecycleNode):
    def __init__(self, build_perception=Perception.from_settings, **kwargs):
        super().__init__('panoptic_node', **kwargs)
        try:
            self.settings = Settings.from_params(declare_parameters(self, PARAMETERS))
        except ValueError as exc:
            raise BadParameter(str(exc), None) from exc
        self.build_perception = build_perception
        self.perception, self.active, self.worker, self.start_error = None, False, None, None
        self.stats, self.warn = StageStats(), ThrottledWarnings(self.get_logger().warning)
        self.add_on_set_parameters_callback(settings_validator(
            self, PARAMETERS, lambda params: Settings.for_model(params, self.perception)))
        self.add_post_set_parameters_callback(self._apply_parameters)
        if self.settings.autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self.start_error or RuntimeError('configure failed')
            self.trigger_activate()

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state):
        s, log = self.settings, self.get_logger()
        try:
            self.perception = self.build_perception(s)
        except (*START_ERRORS, ValueError) as exc:
            self.start_error = exc
            log.error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        log.info(self.perception.description)
        for warning in self.perception.warnings:
            log.warning(warning)
        self.colors = class_palette(len(self.perception.classes))
        self.extrinsics = Extrinsics(self, s)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=s.image_queue_depth,
                         reliability=messages.RELIABILITY[s.image_reliability])
        self.cameras = [CameraInput(self, k, name, s, qos, self.on_image)
                        for k, name in enumerate(s.cameras)]
        self.poses = RobotPoses(self, s, self.extrinsics)
        self.grids = SharedGrids(self, s, self.poses)
        self.class_pub = self.create_publisher(ClassTable, 'class_info', messages.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
        self.worker = FrameWorker(   # start_cycle, then finish_cycle (overlapped or not)
            lambda msgs: self._guarded(self.start_cycle, msgs),
            lambda camera: self.stats.count('dropped_newer_frame'),
            lambda cycle: self._guarded(self.finish_cycle, cycle), s.overlap_stages,
            gather=(s.batch_wait, sending_cameras(self.cameras, s.camera_timeout)))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        p = self.perception
        self.class_pub.publish(messages.class_table_msg(
            self.get_clock().now().to_msg(), p.classes, p.model_config.is_thing, self.colors,
            p.label_divisor))
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.active = False
        self.stats.count('skipped_inactive', self.worker.drop_pending())   # never processed
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.active = False
        self.stop()
        for part in (*self.cameras, self.poses, self.grids):
            part.destroy()
        for pub in (self.class_pub, self.diag_pub):
            self.destroy_publisher(pub)
        self.destroy_timer(self.diag_timer)
        self.perception = self.extrinsics = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        return self.on_cleanup(state) if self.perception is not None else \
            TransitionCallbackReturn.SUCCESS

    def _apply_parameters(self, changed):   # after settings_validator accepted the change
        self.settings = Settings.from_params(current_values(self, PARAMETERS))
        if self.perception is not None:
            self.perception.reconfigure(self.settings)
        self.get_logger().info('set ' + ', '.join(f'{p.name}={p.value!r}' for p in changed))

    # ---- inputs (executor thread: store only), worker, diagnostics -------------------------
    def on_image(self, camera, msg, check):   # raw Image or CompressedImage of one camera
        self.stats.count('received_images')
        if check:
            try:   # header fields only: malformed images never displace a good pending frame
                check_image(msg, 'rgb8')
            except ImageFormatError as exc:
                return self._bad_image(exc)
        if not self.active:
            return self.stats.count('skipped_inactive')
        camera.last_frame = now = time.monotonic()
        self.stats.inputs.append(now)
        self.worker.put(msg, camera.index)

    def _bad_image(self, exc):
        self.stats.count(f'dropped_bad_image_{exc.reason}')
        self.warn(exc.reason, f'dropped image: {exc}')

    def _guarded(self, stage, arg):
        """One stage of a frame; a pipeline fault is counted and warned, never raised."""
        try:
            return stage(arg)
        except NonFiniteOutput as exc:
            self.stats.count('dropped_non_finite_output')
            self.warn('non_finite', f'{exc}: frame skipped')
        except Exception as exc:   # one bad frame never kills the node
            if not self.context.ok():   # shut down while in flight: not a failure
                self.stats.count('abandoned_at_shutdown')
                return FrameWorker.STOP
            self.stats.count('failed_pipeline_exception')
            self.warn('exception', f'frame failed: {type(exc).__name__}: {exc}')
        self.stats.count('consecutive_failures')   # failed in the pipeline: towards ERROR
        return None

    def start_cycle(self, msgs):
        """Decode the newest frame of each camera ({camera index: msg}), find its camera
        model and extrinsics, and run them all through one network call: the cycle for
        finish_cycle, or None when there is nothing to process (nobody listens, bad input);
        pipeline faults raise."""
        grids = self.grids.wants()
        frames = []
        for index, msg in sorted(msgs.items()):
            cam = self.cameras[index]
            wants = cam.wants()
            if not wants and not grids:
                self.stats.count('skipped_no_subscribers')
                continue
            start = time.perf_counter()
            try:
                rgb = decode_rgb(msg)
            except ImageFormatError as exc:
                self._bad_image(exc)
                continue
            camera, T = None, None
            if grids or wants & {'detections', 'markers'}:
                camera, T = cam.geometry(msg.header, self.extrinsics)
            if not wants and T is None:   # only the grids want it and it has no geometry
                continue
            frames.append((cam, msg.header, wants, camera, T, time.perf_counter() - start, rgb))
        if not frames:
            return None
        self.stats.count('network_calls')
        self.stats.count('network_images', len(frames))
        started = self.perception.start_batch([frame[-1] for frame in frames])
        return grids, [(*frame[:-1], s) for frame, s in zip(frames, started)]

    def finish_cycle(self, cycle):
        """Head, occupancy and publishing of a started cycle, camera by camera, then the
        shared grids; True when published."""
        grid_wants, frames = cycle
        grids, p = [], self.perception
        for cam, header, wants, camera, T, convert, started in frames:
            out = p.finish(started, camera, T)
            for counter, key, text, period in out.problems(self.settings.max_image_pixels):
                self.stats.count(counter)
                self.warn(f'{key} {cam.label}', cam.tag + text, period)
            start = time.perf_counter()
            for name, output in messages.frame_messages(wants, header, out, self.settings.grid,
                                                        p.label_divisor, len(p.classes),
                                                        self.colors).items():
                cam.pubs[name].publish(output)
            if out.grid is not None:
                grids.append((out.grid, T, header))
            self.stats.add({**out.timings, 'convert': convert,
                            'publish': time.perf_counter() - start})
            self.stats.outputs.append(time.monotonic())
            self.stats.count('processed')
            self.stats.count(f'processed_{cam.label}')
        if grids and grid_wants:
            self.stats.add({'grids': self.grids.publish(grid_wants, grids)})
        self.stats.reset('consecutive_failures')
        return True

    def publish_diagnostics(self):
        counters, latencies, in_rate, out_rate = self.stats.snapshot(time.monotonic())
        s, backend = self.settings, self.perception.backend
        level, message = diagnostics_level(counters.get('consecutive_failures', 0), in_rate,
                                           out_rate, s.min_output_rate,
                                           s.max_consecutive_failures)
        stale = [c.label for c in self.cameras if c.stale(time.monotonic(), s.camera_timeout)]
        if stale and len(self.cameras) > 1 and level == OK:
            level, message = WARN, f'no frames from {", ".join(stale)} for over ' \
                                   f'{s.camera_timeout:g} s'
        if not self.active:
            level, message = OK, 'inactive'
        values = [('backend', backend.name), ('device', str(backend.device)),
                  ('model', self.perception.model_name), ('cameras', str(len(self.cameras))),
                  ('stale_cameras', ' '.join(stale))] + \
            health_values(counters, latencies, in_rate, out_rate)
        self.diag_pub.publish(messages.diagnostics_msg(
            self.get_clock().now().to_msg(), 'panoptic_node: pipeline', str(backend.device),
            level, message, values))

    def stop(self):   # the worker (a frame in flight finishes)
        if getattr(self, 'worker', None) is not None:   # None before configure
            self.worker, worker = None, self.worker
            worker.stop()

    def destroy_node(self):
        self.stop()
        return super().destroy_node()


def main(args=None):
    return run_node(PanopticNode, 'panoptic_node', args, START_ERRORS)


if __name__ == '__main__':
    sys.exit(main())
