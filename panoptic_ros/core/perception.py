"""The perception core: one camera image in, everything the node publishes out. No ROS.

    Perception.from_settings(settings)          once (loads the model, builds the stages)
    perception(rgb, camera, T_base_optical)     per frame -> FrameOutput
      = finish(start(rgb), camera, T_base_optical), two stages that may overlap across frames
    start_batch([rgb, ...])                     the newest image of each camera, one network
                                                call -> a StartedFrame each, for finish()

Per frame: images above max_image_pixels are resized down (aspect kept) -> FramePipeline
(preprocess -> network -> decode -> finite check -> panoptic head, core.inference) ->
occupancy projection and ground positions of the detections (core.occupancy), when a
camera model and extrinsics are given. The parts are injected (a FramePipeline, or a
backend / preprocessor to build one from) so that tests can give a faulty one.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from panoptic_ros.core.backends import configure_torch_threads, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.head import learned
from panoptic_ros.core.inference import FramePipeline, StageTimer
from panoptic_ros.core.occupancy import OccupancyProjector


MAX_PROJECTORS = 16   # lookup tables kept: one per camera and pose (tf may move a camera)


@dataclass
class Detection:
    """A thing instance: instance_id = its panoptic segment id, class_id its category id
    (1-based, 0 is void), box (x1, y1, x2, y2) in processed-image pixels, ground (x, y) in
    the base frame (metres) or None when it does not meet visible ground or no grid was
    computed."""
    instance_id: int
    class_id: int
    class_name: str
    score: float
    box: tuple
    ground: tuple = None


@dataclass
class FrameOutput:
    """Everything one frame produces.

    rgb: uint8 [h, w, 3], the image as processed (resized when it was larger than
    max_image_pixels; resized_from is then the (h, w) it arrived with, else None);
    panoptic: int32 [h, w] ids (category_id * label_divisor + instance, 0 void);
    segments: dicts (id, category_id, is_thing, score, area, box x1, y1, x2, y2);
    detections: [Detection]; grid: int8 [grid.height, grid.width] occupancy (-1 unknown,
    0..100) or None, grid_problem: why there is none when one was asked for;
    timings: {stage: seconds} (preprocess, network, decode, head, occupancy).
    """
    rgb: np.ndarray
    panoptic: np.ndarray
    segments: list
    detections: list
    grid: np.ndarray = None
    grid_problem: str = None
    resized_from: tuple = None
    timings: dict = field(default_factory=dict)

    def problems(self, max_image_pixels):
        """What went wrong without failing the frame: (counter, warning key, message,
        seconds between repeated warnings) each."""
        found = []
        if self.resized_from is not None:
            h, w = self.resized_from
            found.append(('resized_large_image', 'resized', f'image of {w}x{h} pixels resized '
                          f'to {self.rgb.shape[1::-1]} (max_image_pixels {max_image_pixels})',
                          30.0))
        if self.grid_problem is not None:
            found.append(('occupancy_skipped_camera_info', 'grid', self.grid_problem, 10.0))
        return found


@dataclass
class StartedFrame:
    """A frame between Perception.start and Perception.finish: the pipeline it started in,
    the image as processed and as it arrived ((h, w)), the decoded network output and the
    stage timer so far."""
    pipeline: FramePipeline
    rgb: np.ndarray
    original: tuple
    network: object
    timer: StageTimer


def fit_pixels(rgb, max_pixels):
    """rgb resized down (INTER_AREA, aspect kept) to at most max_pixels pixels; unchanged
    when it is not larger."""
    pixels = rgb.shape[0] * rgb.shape[1]
    if pixels <= max_pixels:
        return rgb
    f = (max_pixels / pixels) ** 0.5
    size = (max(1, int(rgb.shape[1] * f)), max(1, int(rgb.shape[0] * f)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


class Perception:
    """Values that do not change frame by frame (the network, the stage configs, the grid),
    and one call per frame.

    pipeline: FramePipeline; classes: class names (category id k is classes[k - 1]);
    grid: occupancy GridConfig; occupancy_config: OccupancyConfig with roles by category id;
    max_image_pixels: larger images are resized down first.
    """

    def __init__(self, pipeline, classes, grid, occupancy_config, max_image_pixels):
        self.pipeline = pipeline
        self.classes = list(classes)
        self.grid = grid
        self.occupancy_config = occupancy_config
        self.max_image_pixels = max_image_pixels
        self.label_divisor = pipeline.head.config.label_divisor
        self._projectors = {}   # (camera, label size, pose) -> OccupancyProjector, per camera
        self.model_name, self.description, self.warnings = None, '', []   # from_settings
        self.model_path = None

    @classmethod
    def from_settings(cls, settings, backend=None, preprocess=None):
        """Load the model of settings.model_path and build every stage (backend: a built
        backend to use instead of settings.backend's; preprocess: a Preprocessor-like
        callable). Start-up faults raise CheckpointError / BackendUnavailable / ValueError
        with a message naming the file or value."""
        s = settings
        model, _ = load_checkpoint(s.model_path)
        if s.input_size is not None:
            model = model.at_input_size(s.input_size)
        if backend is None:
            backend = make_backend(s.backend, model, s.device, s.half, s.cache_dir,
                                   s.strict_device, threads=s.threads or None,
                                   model_path=s.model_path, batch=len(s.cameras))
        configure_torch_threads(backend, s.threads)
        classes = list(model.config.classes)
        pipeline = FramePipeline(backend, s.decode, s.head, preprocess=preprocess,
                                 learned=learned.loader_for(s.model_path, classes))
        perception = cls(pipeline, classes, s.grid,
                         s.occupancy_config(classes, s.head.label_divisor),
                         s.max_image_pixels)
        perception.model_name = s.model_path.name
        perception.model_path = s.model_path
        if s.device.startswith('cuda') and backend.device.type != 'cuda':
            perception.warnings.append('device cuda requested but CUDA is not available: '
                                       'running on the CPU (set strict_device to fail '
                                       'instead)')
        perception.description = (
            f'model {s.model_path} ({model.config.encoder}, {len(classes)} classes, input '
            f'{model.config.input_size}) on backend {backend.name} ({backend.device})')
        return perception

    @property
    def model_config(self):
        return self.pipeline.model_config

    @property
    def backend(self):
        return self.pipeline.backend

    def reconfigure(self, settings):
        """Take the decode and head settings of `settings` (the values that may change while
        frames flow); a frame in flight finishes with the previous ones."""
        self.pipeline = self.pipeline.reconfigured(settings.decode, settings.head)

    def __call__(self, rgb, camera=None, T_base_optical=None):
        """rgb: uint8 [h, w, 3] camera image; camera: PinholeCamera of the image as it
        arrived (None: no occupancy, no ground positions); T_base_optical [4, 4]: the
        camera's pose in the base frame at the image stamp. Returns FrameOutput; raises
        NonFiniteOutput when the network output holds NaN or inf."""
        return self.finish(self.start(rgb), camera, T_base_optical)

    def start(self, rgb):
        """The first stage of a frame (resize, preprocess, network, decode): a
        StartedFrame for finish(). The next frame's start may run while this one finishes."""
        original = rgb.shape[:2]
        rgb = fit_pixels(rgb, self.max_image_pixels)
        pipeline = self.pipeline   # a reconfiguration in between takes the next frame
        return StartedFrame(pipeline, rgb, original, *pipeline.network_stage(rgb))

    def start_batch(self, images):
        """start() for the newest image of each camera in one network call (at most the
        backend's batch): [StartedFrame] in their order."""
        originals = [rgb.shape[:2] for rgb in images]
        images = [fit_pixels(rgb, self.max_image_pixels) for rgb in images]
        pipeline = self.pipeline
        return [StartedFrame(pipeline, rgb, original, net, timer) for rgb, original, (net, timer)
                in zip(images, originals, pipeline.network_stage_batch(images))]

    def finish(self, started, camera=None, T_base_optical=None):
        """The second stage (panoptic head, occupancy, detections) -> FrameOutput; camera
        and T_base_optical as for __call__."""
        rgb, original = started.rgb, started.original
        result = started.pipeline.head_stage(started.network, started.timer)
        timer = StageTimer()
        out = FrameOutput(rgb=rgb, panoptic=result.panoptic.panoptic.cpu().numpy(),
                          segments=[dict(s, id=s['segment_id'])
                                    for s in result.panoptic.segments()],
                          detections=[], timings=dict(result.timings),
                          resized_from=original if rgb.shape[:2] != original else None)
        ground = {}
        if camera is not None and T_base_optical is not None:
            with timer('occupancy'):
                projector, out.grid_problem = self.projector(camera, original,
                                                             out.panoptic.shape,
                                                             T_base_optical)
                if projector is not None:
                    out.grid, ground = projector(out.panoptic)
        out.timings.update(timer.seconds)
        out.detections = [
            Detection(instance_id=int(s['id']), class_id=int(s['category_id']),
                      class_name=self.classes[s['category_id'] - 1], score=float(s['score']),
                      box=tuple(float(v) for v in s['box']), ground=ground.get(s['id']))
            for s in out.segments if s['is_thing']]
        return out

    def projector(self, camera, original_size, label_size, T_base_optical):
        """(OccupancyProjector, None) for this camera, pose and label size (built when one of
        them changes), or (None, why not). The camera describes the image as it arrived;
        labels of a resized image get correspondingly scaled intrinsics."""
        if camera.size != tuple(original_size):
            return None, (f'camera_info is {camera.width}x{camera.height} but the image is '
                          f'{original_size[1]}x{original_size[0]}: occupancy disabled for '
                          'this frame')
        key = (camera.key(), tuple(label_size), np.round(T_base_optical, 4).tobytes())
        if key not in self._projectors:
            try:
                projector = OccupancyProjector(
                    camera.scaled(label_size[1], label_size[0]), T_base_optical, self.grid,
                    self.occupancy_config, len(self.classes) + 1)
            except ValueError as exc:
                return None, f'occupancy disabled: {exc}'
            if len(self._projectors) >= MAX_PROJECTORS:   # the oldest goes (moving cameras)
                self._projectors.pop(next(iter(self._projectors)))
            self._projectors[key] = projector
        return self._projectors[key], None
