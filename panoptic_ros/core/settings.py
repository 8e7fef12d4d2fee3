"""Node settings: every value that does not change frame by frame, validated in one place.

`PARAMETERS` is the single list of panoptic_node parameters (name -> Spec: default,
description, accepted values, whether it may change at run time); the ROS layer declares
them from it, config/panoptic.yaml sets the same keys and README's parameter table is
generated from it (tests keep all three equal). `Settings.from_params` turns a {name: value}
dict into the configs of the pipeline stages and raises ValueError naming the parameter and
its bad value. The defaults of the stage configs (DecodeConfig, PanopticHeadConfig) are the
parameters' defaults, so training validation, benchmarks and the node run the same settings.
No ROS imports here.
"""

import dataclasses
from dataclasses import dataclass
import math
from pathlib import Path


from panoptic_ros.core.backends import BACKENDS
from panoptic_ros.core.camera_model import camera_pose_in_base
from panoptic_ros.core.inference import check_policy_inputs, DecodeConfig
from panoptic_ros.core.occupancy import FootprintPrior, GridConfig, OccupancyConfig
from panoptic_ros.core.occupancy.accumulated import MapConfig
from panoptic_ros.core.occupancy.fusion import FUSION_RULES
from panoptic_ros.core.head import learned, PanopticHeadConfig, POLICIES
from panoptic_ros.core.head.policies import REGISTRY

OUTPUTS = ('panoptic', 'semantic', 'colored', 'detections', 'markers', 'occupancy',
           'accumulated')
CAMERA_OUTPUTS = OUTPUTS[:5]   # one per camera, under its namespace
GRID_OUTPUTS = OUTPUTS[5:]     # the node's, shared by every camera
RELIABILITIES = ('best_effort', 'reliable')
DEFAULT_MODEL = 'panoptic_branches_sim.safetensors'


@dataclass(frozen=True)
class Spec:
    """One parameter: default, description and the values it accepts.

    low / high: inclusive bounds (exclusive where low_open / high_open); choices: the
    accepted values (for a list, the accepted entries); live: may change while the node
    runs (`ros2 param set`), otherwise read-only once the node has started. The ROS layer
    turns a Spec into a ParameterDescriptor (ranges, choices, read_only); `check` is the one
    validation of a single value.
    """
    default: object
    description: str
    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = None
    live: bool = False

    def check(self, name, value):
        """Raise ValueError naming the parameter and its bad value."""
        def bad(why):
            raise ValueError(f'parameter {name}={value!r}: {why}')
        kind = type(self.default)
        if kind is float and not isinstance(value, (int, float)) or \
                kind is int and not isinstance(value, int) or \
                kind is bool and not isinstance(value, bool) or \
                kind is str and not isinstance(value, str) or \
                kind is list and not isinstance(value, (list, tuple)):
            bad(f'must be of type {kind.__name__}')
        if self.low is not None or self.high is not None:
            if isinstance(value, float) and not math.isfinite(value):
                bad('must be finite')
            below = self.low is not None and (value <= self.low if self.low_open
                                              else value < self.low)
            above = self.high is not None and (value >= self.high if self.high_open
                                               else value > self.high)
            if below or above:
                bad(f'must be in {self.range_text()}')
        if self.choices is not None:
            values = value if kind is list else [value]
            wrong = [v for v in values if v not in self.choices]
            if wrong:
                bad(f'must be {"entries " if kind is list else ""}one of '
                    f'{", ".join(map(str, self.choices))}')

    def range_text(self):
        low = '-inf' if self.low is None else self.low
        high = 'inf' if self.high is None else self.high
        return f'{"(" if self.low_open else "["}{low}, {high}{")" if self.high_open else "]"}'


_head, _decode = PanopticHeadConfig(), DecodeConfig()
PARAMETERS = {
    'model_path': Spec('', 'checkpoint (.safetensors); empty = the shipped model '
                           '(models/panoptic_branches_sim; models/panoptic_light_sim is the '
                           'lighter one)'),
    'cameras': Spec([''], 'camera namespaces: <camera>/image, <camera>/camera_info in and '
                          'the per-camera outputs under <camera>/; their newest frames run '
                          'through the network in one batched call; [\'\'] = one camera on '
                          'the node\'s own topics'),
    'camera_timeout': Spec(1.0, 'a camera without a frame for this long is reported stale in '
                                'diagnostics and no longer waited for (batch_wait) (s)',
                           low=0.0, high=3600.0, low_open=True),
    'batch_wait': Spec(0.02, 'several cameras: how long a cycle waits after its first frame '
                             'for the frames of the other cameras that are sending, so that '
                             'cameras triggered together share one network call; 0 = take '
                             'what is there (s)', low=0.0, high=1.0),
    'backend': Spec('onnxruntime_int8', 'network runtime (onnxruntime_int8 runs fp32 where the '
                                        'model has no INT8 file)', choices=BACKENDS),
    'device': Spec('cpu', "'cpu' or 'cuda[:N]' ('cuda' falls back to the CPU unless "
                          "strict_device)"),
    'strict_device': Spec(False, 'fail at start-up instead of falling back to the CPU'),
    'half': Spec(False, 'fp16 on CUDA (torch backends)'),
    'threads': Spec(0, 'CPU threads for the network, 0 = library default (PyTorch runs the '
                       'head on 1 thread when onnxruntime or tensorrt runs the network)',
                    low=0, high=256),
    'cache_dir': Spec('', 'folder for exported ONNX and TensorRT engines; empty = ~/.cache/'
                          'panoptic_ros'),
    'input_size': Spec([384, 288], 'network input [width, height] in pixels (width a multiple '
                                   'of 32, height of 16); [0, 0] = the size the model was '
                                   'trained at (320x240 for both shipped models). Larger finds '
                                   'small objects more often for more network time. At another '
                                   'size onnxruntime_int8 runs <model stem>.<W>x<H>.int8.onnx '
                                   '(panoptic-ros-quantize --input-size; the shipped model has '
                                   'them at 384x288 and 448x336), fp32 where there is none: run '
                                   'the light model at [0, 0]'),
    'overlap_stages': Spec(False, 'run the network of the next frame while the head, '
                                  'occupancy and publishing of this one finish (two threads; '
                                  'frames are still published in order; on a 2-core CPU it '
                                  'does not pay)'),
    'score_threshold': Spec(_decode.score_threshold, 'detection score threshold (confidence, '
                            'times border-ness with LPSNet\'s box head; the shipped model '
                            'scores best at 0.2, the light model at 0.4)',
                            low=0.0, high=1.0, live=True),
    'borderness_score': Spec(_decode.borderness_score, 'with LPSNet\'s box head, multiply the '
                             'class confidence by the box\'s border-ness before the threshold '
                             'and NMS (off: confidence alone; of score_threshold 0.2, 0.3 '
                             'and 0.4 the shipped model then scores best at 0.4)', live=True),
    'nms_iou': Spec(_decode.nms_iou, 'IoU of per-class non-maximum suppression', low=0.0,
                    high=1.0, low_open=True, live=True),
    'cross_class_iou': Spec(_decode.cross_class_iou, 'two detections of different classes '
                            'overlapping by more than this IoU are one object, whose class the '
                            'semantic branch gives by majority vote in their overlap (the '
                            'other detection is dropped); 1 = off', low=0.0, high=1.0,
                            low_open=True, live=True),
    'max_detections': Spec(_decode.max_detections, 'detections kept per frame (the head\'s '
                                                   'instance slots; below label_divisor)',
                           low=1, high=_head.label_divisor - 1),
    'overlap_policy': Spec(_head.policy, 'panoptic head: how same-class overlaps are '
                                         'resolved', choices=POLICIES, live=True),
    'unknowns': Spec(_head.unknowns, 'thing pixels no detection explains become void',
                     live=True),
    'stuff_area_fraction': Spec(_head.stuff_area_fraction, 'stuff segments smaller than this '
                                                           'fraction of the image become void',
                                low=0.0, high=1.0, high_open=True, live=True),
    'outputs': Spec(list(OUTPUTS), 'outputs to publish', choices=OUTPUTS),
    'image_reliability': Spec('best_effort', 'QoS reliability of image and camera_info',
                              choices=RELIABILITIES),
    'image_queue_depth': Spec(1, 'QoS depth of the image subscription', low=1, high=10000),
    'use_compressed': Spec(False, 'also subscribe to image/compressed '
                                  '(sensor_msgs/CompressedImage)'),
    'max_image_pixels': Spec(3840 * 2160, 'larger images are resized down before processing',
                             low=64 * 64, high=10 ** 9),
    'free_classes': Spec(['road'], 'classes that are drivable ground (occupancy 0)'),
    'cost_classes': Spec(['grass'], 'classes that are non-drivable ground (occupancy = '
                                    'ground_cost)'),
    'ground_cost': Spec(50, 'occupancy value of cost_classes', low=1, high=99),
    'ignore_classes': Spec(['sky'], 'classes never projected (above the horizon)'),
    'footprint_classes': Spec(['car', 'robot', 'droid', 'duck', 'teddy', 'table'],
                              'thing classes whose footprint is completed as a rectangle '
                              'from footprint_priors'),
    'footprint_priors': Spec([1.61, 1.02, 0.11, 0.55, 1.08, 0.74, 0.05, 0.42,
                              0.73, 0.55, 0.03, 0.93, 0.46, 0.43, 0.24, 0.3,
                              0.76, 0.62, 0.31, 0.5, 1.47, 0.98, 0.03, 0.63],
                             'per footprint class 4 numbers (m): length, width, contact '
                             'offset (how far the footprint reaches in front of the visible '
                             'ground contact), height (0 = unknown); the defaults are the '
                             'simulator\'s, measured by panoptic-ros-sim footprint-priors'),
    'footprint_scale': Spec(0.95, 'fraction of a prior\'s length and width marked occupied',
                            low=0.0, high=2.0, low_open=True),
    'obstacle_depth': Spec(0.2, 'metres behind the visible contacts of an obstacle without a '
                                'footprint prior marked occupied (perpendicular to a wall\'s '
                                'face, along the camera rays of a thing)', low=0.0, high=10.0),
    'max_footprint': Spec(0.7, 'contacts of a thing without a footprint prior farther than '
                               'this behind its nearest one are not its footprint (m)',
                          low=0.0, high=100.0, low_open=True),
    'base_frame_id': Spec('base_link', 'frame of the occupancy grid and ground positions'),
    'grid_resolution': Spec(0.05, 'occupancy cell size (m)', low=0.0, high=10.0,
                            low_open=True),
    'grid_width': Spec(200, 'cells along x', low=1, high=10000),
    'grid_height': Spec(200, 'cells along y', low=1, high=10000),
    'grid_origin_x': Spec(0.0, 'x of the grid\'s lower corner in the base frame (m)'),
    'grid_origin_y': Spec(-5.0, 'y of the grid\'s lower corner in the base frame (m)'),
    'use_tf': Spec(True, 'camera extrinsics from tf2 at the image stamp when tf2_ros exists'),
    'tf_timeout': Spec(0.05, 'seconds to wait for a transform', low=0.0, high=10.0),
    'camera_xyz': Spec([0.0, 0.0, 1.0], 'fallback extrinsics: camera position in the base '
                                        'frame (m): 3 numbers for every camera, or 3 per '
                                        'camera'),
    'camera_rpy': Spec([0.0, 0.2, 0.0], 'fallback extrinsics: camera roll, pitch (> 0 looks '
                                        'down), yaw (rad): 3 numbers, or 3 per camera'),
    'fusion_rule': Spec('occupied_wins', 'occupancy: value of a cell several cameras see',
                        choices=FUSION_RULES),
    'odom_frame_id': Spec('odom', 'frame of occupancy/accumulated (tf odom -> base frame at '
                                  'the image stamp where available, else odom_topic)'),
    'odom_topic': Spec('odom', 'nav_msgs/Odometry of the robot (pose of base in odom)'),
    'pose_tolerance': Spec(0.1, 'the newest pose may be this much older than the image (s); '
                                'older: the map skips the frame', low=0.0, high=10.0),
    'map_resolution': Spec(0.1, 'accumulated map cell size (m)', low=0.0, high=10.0,
                           low_open=True),
    'map_width': Spec(400, 'accumulated map cells along x (centred on the robot)', low=1,
                      high=10000),
    'map_height': Spec(400, 'accumulated map cells along y', low=1, high=10000),
    'map_memory': Spec(30.0, 'seconds after which an obstacle nobody sees any more falls '
                             'below occupied', low=0.0, high=1e6, low_open=True),
    'min_output_rate': Spec(1.0, 'diagnostics: WARN below this output rate (Hz)', low=0.0,
                            high=1000.0),
    'max_consecutive_failures': Spec(5, 'diagnostics: ERROR after this many frames in a row '
                                        'failed in the pipeline', low=1, high=10 ** 6),
    'autostart': Spec(True, 'walk the lifecycle through configure and activate at start-up '
                            '(false: wait for a lifecycle manager)'),
}
LIVE = tuple(name for name, spec in PARAMETERS.items() if spec.live)


def parameters_markdown(specs=PARAMETERS):
    """README's parameter table (markdown): name, default, accepted values, live, meaning."""
    def shown(value):
        if isinstance(value, list) and len(value) > 6:
            return f'{len(value)} numbers' if all(isinstance(v, float) for v in value) \
                else f'{len(value)} entries'
        if isinstance(value, str):
            return f"`'{value}'`"
        if isinstance(value, float):
            return f'`{value:.4g}`'
        return f'`{str(value).lower() if isinstance(value, bool) else value}`'

    def accepted(spec):
        if spec.choices is not None:
            return ', '.join(f'`{c}`' for c in spec.choices)
        if spec.low is not None or spec.high is not None:
            return spec.range_text()
        return ''

    rows = ['| parameter | default | accepts | live | description |', '|---|---|---|---|---|']
    for name, spec in specs.items():
        rows.append(f'| `{name}` | {shown(spec.default)} | {accepted(spec)} | '
                    f'{"yes" if spec.live else ""} | {spec.description} |')
    return '\n'.join(rows) + '\n'


def check_parameters(params, specs=PARAMETERS):
    """Check each value of {name: value} against its Spec (ValueError names the first bad
    one, or the unknown names)."""
    unknown = set(params) - set(specs)
    if unknown:
        raise ValueError(f'unknown parameters: {sorted(unknown)}')
    for name, value in params.items():
        specs[name].check(name, value)


@dataclass(frozen=True)
class Settings:
    model_path: Path
    backend: str
    device: str
    strict_device: bool
    half: bool
    threads: int
    cache_dir: Path
    input_size: tuple          # (width, height); None: the model's own
    overlap_stages: bool
    decode: DecodeConfig
    head: PanopticHeadConfig
    outputs: tuple
    image_reliability: str
    image_queue_depth: int
    use_compressed: bool
    max_image_pixels: int
    class_roles: dict          # class name -> occupancy role
    footprints: dict           # class name -> FootprintPrior
    occupancy: OccupancyConfig  # without roles (filled once the model's classes are known)
    grid: GridConfig
    use_tf: bool
    tf_timeout: float
    T_base_optical: tuple      # [4, 4] per camera (fallback extrinsics)
    cameras: tuple
    camera_timeout: float
    batch_wait: float
    fusion_rule: str
    odom_topic: str
    pose_tolerance: float
    map: MapConfig
    min_output_rate: float
    max_consecutive_failures: int
    autostart: bool

    @classmethod
    def for_model(cls, p, perception=None):
        """from_params, and a ValueError when the running `perception`'s model cannot feed the
        overlap policy asked for (a live change is then refused with that reason)."""
        settings = cls.from_params(p)
        if perception is not None:
            policy = REGISTRY[settings.head.policy]
            check_policy_inputs(policy, perception.model_config)
            if policy.learned and perception.model_path is not None:
                path = learned.weights_path(perception.model_path, policy.name)
                if not path.is_file():
                    raise ValueError(f'overlap_policy {policy.name!r} needs its learned '
                                     f'weights at {path}, which do not exist')
        return settings

    @classmethod
    def from_params(cls, p, package_root=None):
        """Validate parameters (name -> value; missing ones take their defaults) and build
        the stage configs. ValueError names the parameter and its bad value."""
        def bad(name, why):
            raise ValueError(f'parameter {name}={p[name]!r}: {why}')
        check_parameters(p)
        p = {**{name: spec.default for name, spec in PARAMETERS.items()}, **p}
        model_path = Path(p['model_path']) if p['model_path'] else \
            default_model_path(package_root)
        if str(p['device']).split(':')[0] not in ('cpu', 'cuda'):
            bad('device', "must be 'cpu' or 'cuda[:N]'")
        decode = DecodeConfig(score_threshold=float(p['score_threshold']),
                              nms_iou=float(p['nms_iou']),
                              cross_class_iou=float(p['cross_class_iou']),
                              max_detections=int(p['max_detections']),
                              borderness_score=bool(p['borderness_score']))
        head = PanopticHeadConfig(policy=p['overlap_policy'], unknowns=bool(p['unknowns']),
                                  stuff_area_fraction=float(p['stuff_area_fraction']))
        # occupancy: each class has one role, footprints only for classes without one
        roles = {}
        for key, role in (('free_classes', 'free'), ('cost_classes', 'cost'),
                          ('ignore_classes', 'ignore')):
            for name in p[key]:
                if name in roles:
                    bad(key, f'class {name!r} is already listed as {roles[name]}')
                roles[name] = role
        if len(set(p['footprint_classes'])) != len(p['footprint_classes']):
            bad('footprint_classes', 'lists a class twice')
        for name in p['footprint_classes']:
            if name in roles:
                bad('footprint_classes', f'class {name!r} is listed as {roles[name]}')
        if len(p['footprint_priors']) != 4 * len(p['footprint_classes']):
            bad('footprint_priors', f'needs 4 numbers per footprint class '
                                    f'({len(p["footprint_classes"])} classes)')
        footprints = {}
        for k, name in enumerate(p['footprint_classes']):
            try:
                footprints[name] = FootprintPrior(*(float(v) for v in
                                                    p['footprint_priors'][4 * k:4 * k + 4]))
            except ValueError as exc:
                bad('footprint_priors', f'class {name!r}: {exc}')
        occupancy = OccupancyConfig(default_cost=int(p['ground_cost']),
                                    footprint_scale=float(p['footprint_scale']),
                                    obstacle_depth=float(p['obstacle_depth']),
                                    max_footprint=float(p['max_footprint']))
        if not p['base_frame_id']:
            bad('base_frame_id', 'must not be empty')
        grid = GridConfig(resolution=float(p['grid_resolution']), width=int(p['grid_width']),
                          height=int(p['grid_height']), origin_x=float(p['grid_origin_x']),
                          origin_y=float(p['grid_origin_y']), frame_id=p['base_frame_id'])
        cameras = tuple(p['cameras'])
        if not cameras or len(set(cameras)) != len(cameras):
            bad('cameras', 'needs at least one camera and no name twice')
        if '' in cameras and len(cameras) > 1:
            bad('cameras', "'' (the node's own topics) cannot be combined with named cameras")
        for name in cameras:
            if name and not all(part.isidentifier() for part in name.split('/')):
                bad('cameras', f'{name!r} is not a topic namespace (letters, digits, _ and /)')
        # fallback extrinsics: 3 numbers for every camera, or 3 per camera
        for name in ('camera_xyz', 'camera_rpy'):
            if len(p[name]) not in (3, 3 * len(cameras)) or \
                    not all(math.isfinite(float(v)) for v in p[name]):
                bad(name, f'must be three finite numbers, or three per camera ({len(cameras)} '
                          'cameras)')

        def triple(name, k):   # camera k's three numbers
            k = k if len(p[name]) > 3 else 0
            return [float(v) for v in p[name][3 * k:3 * k + 3]]
        T = []
        for k in range(len(cameras)):
            x, y, z = triple('camera_xyz', k)
            if z <= 0:
                bad('camera_xyz', 'every camera must be above the ground (z > 0)')
            T.append(camera_pose_in_base(x, y, z, *triple('camera_rpy', k)))
        if not p['odom_frame_id']:
            bad('odom_frame_id', 'must not be empty')
        world_map = MapConfig(resolution=float(p['map_resolution']), width=int(p['map_width']),
                              height=int(p['map_height']), frame_id=p['odom_frame_id'],
                              memory=float(p['map_memory']))
        cache_dir = Path(p['cache_dir']) if p['cache_dir'] else \
            Path.home() / '.cache' / 'panoptic_ros'
        size = list(p['input_size'])
        if len(size) != 2 or not all(type(v) is int for v in size) or size != [0, 0] and (
                size[0] < 32 or size[1] < 16 or size[0] % 32 or size[1] % 16):
            bad('input_size', 'must be [0, 0] or [width, height] with the width a multiple of '
                              '32 and the height of 16')
        return cls(model_path=model_path, backend=p['backend'], device=str(p['device']),
                   strict_device=bool(p['strict_device']), half=bool(p['half']),
                   threads=int(p['threads']), cache_dir=cache_dir,
                   input_size=tuple(size) if size != [0, 0] else None,
                   overlap_stages=bool(p['overlap_stages']), decode=decode, head=head,
                   outputs=tuple(p['outputs']), image_reliability=p['image_reliability'],
                   image_queue_depth=int(p['image_queue_depth']),
                   use_compressed=bool(p['use_compressed']),
                   max_image_pixels=int(p['max_image_pixels']), class_roles=roles,
                   footprints=footprints,
                   occupancy=occupancy, grid=grid, use_tf=bool(p['use_tf']),
                   tf_timeout=float(p['tf_timeout']), T_base_optical=tuple(T),
                   cameras=cameras, camera_timeout=float(p['camera_timeout']),
                   batch_wait=float(p['batch_wait']),
                   fusion_rule=p['fusion_rule'], odom_topic=p['odom_topic'],
                   pose_tolerance=float(p['pose_tolerance']), map=world_map,
                   min_output_rate=float(p['min_output_rate']),
                   max_consecutive_failures=int(p['max_consecutive_failures']),
                   autostart=bool(p['autostart']))

    def occupancy_config(self, classes, label_divisor):
        """OccupancyConfig with roles and footprint priors by category id for the model's
        classes."""
        unknown = (set(self.class_roles) | set(self.footprints)) - set(classes)
        if unknown:
            raise ValueError(f'occupancy classes {sorted(unknown)} are not classes of the '
                             f'model ({list(classes)})')
        roles = {classes.index(name) + 1: role for name, role in self.class_roles.items()}
        footprints = {classes.index(name) + 1: prior
                      for name, prior in self.footprints.items()}
        return dataclasses.replace(self.occupancy, roles=roles, footprints=footprints,
                                   label_divisor=label_divisor)


def load_yaml_params(path, node='panoptic_node'):
    """The ros__parameters of `node` in a --params-file YAML."""
    import yaml
    data = yaml.safe_load(Path(path).read_text())
    return data[node]['ros__parameters']


def default_model_path(package_root=None):
    """The shipped model: <share>/panoptic_ros/models on a ROS install, else <repo>/models."""
    if package_root is not None:
        return Path(package_root) / 'models' / DEFAULT_MODEL
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory('panoptic_ros'))
        if (share / 'models' / DEFAULT_MODEL).is_file():
            return share / 'models' / DEFAULT_MODEL
    except Exception:   # not a ROS install (standalone venv) or package not found
        pass
    return Path(__file__).resolve().parents[2] / 'models' / DEFAULT_MODEL
