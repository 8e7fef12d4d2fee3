"""Node settings: every value that does not change frame by frame, validated in one place.

`PARAMETERS` is the single list of panoptic_node parameters (name -> default, description);
config/panoptic.yaml sets the same keys and test_settings checks that the two agree.
`Settings.from_params` turns a {name: value} dict into the configs of the pipeline stages
and raises ValueError naming the parameter and its bad value. No ROS imports here.
"""

import dataclasses
from dataclasses import dataclass
import math
from pathlib import Path

import numpy as np

from panoptic_ros.core.backends import BACKENDS
from panoptic_ros.core.camera_model import camera_pose_in_base
from panoptic_ros.core.inference import DecodeConfig
from panoptic_ros.core.occupancy import FootprintPrior, GridConfig, OccupancyConfig
from panoptic_ros.core.panoptic_head import PanopticHeadConfig, POLICIES

OUTPUTS = ('panoptic', 'semantic', 'colored', 'detections', 'markers', 'occupancy')
RELIABILITIES = ('best_effort', 'reliable')
DEFAULT_MODEL = 'panoptic_light_sim.safetensors'

PARAMETERS = {
    'model_path': ('', 'checkpoint (.safetensors); empty = the shipped light model'),
    'backend': ('onnxruntime', f'network runtime: one of {", ".join(BACKENDS)}'),
    'device': ('cpu', "'cpu' or 'cuda' ('cuda' falls back to the CPU unless strict_device)"),
    'strict_device': (False, 'fail at start-up instead of falling back to the CPU'),
    'half': (False, 'fp16 on CUDA (torch backends)'),
    'threads': (0, 'CPU threads for the network, 0 = library default (PyTorch runs the head '
                   'on 1 thread when onnxruntime or tensorrt runs the network)'),
    'cache_dir': ('', 'folder for exported ONNX and TensorRT engines; empty = ~/.cache/'
                      'panoptic_ros'),
    'score_threshold': (0.4, 'detection confidence threshold (0..1)'),
    'nms_iou': (0.5, 'IoU of per-class non-maximum suppression (0..1]'),
    'max_detections': (100, 'detections kept per frame (>= 1)'),
    'overlap_policy': ('highest_confidence', f'panoptic head: one of {", ".join(POLICIES)}'),
    'unknowns': (True, 'thing pixels no detection explains become void'),
    'stuff_area_fraction': (4096 / (640 * 480), 'stuff segments smaller than this fraction '
                                                'of the image become void'),
    'outputs': (list(OUTPUTS), f'outputs to publish (subset of {", ".join(OUTPUTS)})'),
    'image_reliability': ('best_effort', 'QoS reliability of image and camera_info '
                                         '(best_effort | reliable)'),
    'image_queue_depth': (1, 'QoS depth of the image subscription (>= 1)'),
    'use_compressed': (False, 'also subscribe to image/compressed (sensor_msgs/CompressedImage)'),
    'max_image_pixels': (3840 * 2160, 'larger images are resized down before processing'),
    'free_classes': (['road'], 'classes that are drivable ground (occupancy 0)'),
    'cost_classes': (['grass'], 'classes that are non-drivable ground (occupancy = ground_cost)'),
    'ground_cost': (50, 'occupancy value of cost_classes (1..99)'),
    'ignore_classes': (['sky'], 'classes never projected (above the horizon)'),
    'footprint_classes': (['car', 'robot', 'droid', 'duck', 'teddy', 'table'],
                          'thing classes whose footprint is completed as a rectangle from '
                          'footprint_priors'),
    'footprint_priors': ([1.61, 1.02, 0.11, 0.55, 1.08, 0.74, 0.05, 0.42,
                          0.73, 0.55, 0.03, 0.93, 0.46, 0.43, 0.24, 0.3,
                          0.76, 0.62, 0.31, 0.5, 1.47, 0.98, 0.03, 0.63],
                         'per footprint class 4 numbers (m): length, width, contact offset '
                         '(how far the footprint reaches in front of the visible ground '
                         'contact), height (0 = unknown); the defaults are the simulator\'s, '
                         'measured by panoptic-ros-sim footprint-priors'),
    'footprint_scale': (0.95, 'fraction of a prior\'s length and width marked occupied (0..2]'),
    'obstacle_depth': (0.2, 'metres behind the visible contacts of an obstacle without a '
                            'footprint prior marked occupied (perpendicular to a wall\'s '
                            'face, along the camera rays of a thing)'),
    'max_footprint': (0.7, 'contacts of a thing without a footprint prior farther than this '
                           'behind its nearest one are not its footprint (m)'),
    'base_frame_id': ('base_link', 'frame of the occupancy grid and ground positions'),
    'grid_resolution': (0.05, 'occupancy cell size (m)'),
    'grid_width': (200, 'cells along x'),
    'grid_height': (200, 'cells along y'),
    'grid_origin_x': (0.0, 'x of the grid\'s lower corner in the base frame (m)'),
    'grid_origin_y': (-5.0, 'y of the grid\'s lower corner in the base frame (m)'),
    'use_tf': (True, 'camera extrinsics from tf2 at the image stamp when tf2_ros exists'),
    'tf_timeout': (0.05, 'seconds to wait for a transform'),
    'camera_xyz': ([0.0, 0.0, 1.0], 'fallback extrinsics: camera position in the base frame (m)'),
    'camera_rpy': ([0.0, 0.2, 0.0], 'fallback extrinsics: camera roll, pitch (> 0 looks '
                                    'down), yaw (rad)'),
    'min_output_rate': (1.0, 'diagnostics: WARN below this output rate (Hz)'),
    'max_consecutive_failures': (5, 'diagnostics: ERROR after this many frames in a row '
                                    'failed in the pipeline'),
}


@dataclass(frozen=True)
class Settings:
    model_path: Path
    backend: str
    device: str
    strict_device: bool
    half: bool
    threads: int
    cache_dir: Path
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
    T_base_optical: np.ndarray
    min_output_rate: float
    max_consecutive_failures: int

    @classmethod
    def from_params(cls, p, package_root=None):
        """Validate parameters (name -> value) and build the stage configs."""
        def bad(name, why):
            raise ValueError(f'parameter {name}={p[name]!r}: {why}')
        unknown = set(p) - set(PARAMETERS)
        if unknown:
            raise ValueError(f'unknown parameters: {sorted(unknown)}')
        p = {**{k: v for k, (v, _) in PARAMETERS.items()}, **p}
        model_path = Path(p['model_path']) if p['model_path'] else \
            default_model_path(package_root)
        if p['backend'] not in BACKENDS:
            bad('backend', f'must be one of {BACKENDS}')
        if str(p['device']).split(':')[0] not in ('cpu', 'cuda'):
            bad('device', "must be 'cpu' or 'cuda[:N]'")
        if p['threads'] < 0:
            bad('threads', 'must be >= 0')
        try:
            decode = DecodeConfig(score_threshold=float(p['score_threshold']),
                                  nms_iou=float(p['nms_iou']),
                                  max_detections=int(p['max_detections']))
        except ValueError as exc:
            name = 'max_detections' if 'max_detections' in str(exc) else \
                'nms_iou' if not 0 < p['nms_iou'] <= 1 else 'score_threshold'
            bad(name, str(exc))
        if p['overlap_policy'] not in POLICIES:
            bad('overlap_policy', f'must be one of {POLICIES}')
        if not 0 <= p['stuff_area_fraction'] < 1:
            bad('stuff_area_fraction', 'must be in [0, 1)')
        head = PanopticHeadConfig(policy=p['overlap_policy'], unknowns=bool(p['unknowns']),
                                  stuff_area_fraction=float(p['stuff_area_fraction']))
        outputs = tuple(p['outputs'])
        if not set(outputs) <= set(OUTPUTS):
            bad('outputs', f'entries must be from {OUTPUTS}')
        if p['image_reliability'] not in RELIABILITIES:
            bad('image_reliability', f'must be one of {RELIABILITIES}')
        if p['image_queue_depth'] < 1:
            bad('image_queue_depth', 'must be >= 1')
        if p['max_image_pixels'] < 64 * 64:
            bad('max_image_pixels', 'must be >= 4096')
        roles = {}
        for key, role in (('free_classes', 'free'), ('cost_classes', 'cost'),
                          ('ignore_classes', 'ignore')):
            for name in p[key]:
                if name in roles:
                    bad(key, f'class {name!r} is already listed as {roles[name]}')
                roles[name] = role
        if not 0 < p['ground_cost'] < 100:
            bad('ground_cost', 'must be in 1..99')
        if p['obstacle_depth'] < 0:
            bad('obstacle_depth', 'must be >= 0')
        if p['max_footprint'] <= 0:
            bad('max_footprint', 'must be > 0')
        if not 0 < p['footprint_scale'] <= 2:
            bad('footprint_scale', 'must be in (0, 2]')
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
        if p['grid_resolution'] <= 0:
            bad('grid_resolution', 'must be > 0')
        for name in ('grid_width', 'grid_height'):
            if not 1 <= p[name] <= 10000:
                bad(name, 'must be in 1..10000')
        grid = GridConfig(resolution=float(p['grid_resolution']), width=int(p['grid_width']),
                          height=int(p['grid_height']), origin_x=float(p['grid_origin_x']),
                          origin_y=float(p['grid_origin_y']), frame_id=p['base_frame_id'])
        if not p['base_frame_id']:
            bad('base_frame_id', 'must not be empty')
        for name in ('camera_xyz', 'camera_rpy'):
            if len(p[name]) != 3 or not all(math.isfinite(float(v)) for v in p[name]):
                bad(name, 'must be three finite numbers')
        if float(p['camera_xyz'][2]) <= 0:
            bad('camera_xyz', 'the camera must be above the ground (z > 0)')
        x, y, z = (float(v) for v in p['camera_xyz'])
        T = camera_pose_in_base(x, y, z, *(float(v) for v in p['camera_rpy']))
        if p['tf_timeout'] < 0:
            bad('tf_timeout', 'must be >= 0')
        if p['max_consecutive_failures'] < 1:
            bad('max_consecutive_failures', 'must be >= 1')
        cache_dir = Path(p['cache_dir']) if p['cache_dir'] else \
            Path.home() / '.cache' / 'panoptic_ros'
        return cls(model_path=model_path, backend=p['backend'], device=str(p['device']),
                   strict_device=bool(p['strict_device']), half=bool(p['half']),
                   threads=int(p['threads']), cache_dir=cache_dir, decode=decode, head=head,
                   outputs=outputs, image_reliability=p['image_reliability'],
                   image_queue_depth=int(p['image_queue_depth']),
                   use_compressed=bool(p['use_compressed']),
                   max_image_pixels=int(p['max_image_pixels']), class_roles=roles,
                   footprints=footprints,
                   occupancy=occupancy, grid=grid, use_tf=bool(p['use_tf']),
                   tf_timeout=float(p['tf_timeout']), T_base_optical=T,
                   min_output_rate=float(p['min_output_rate']),
                   max_consecutive_failures=int(p['max_consecutive_failures']))

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
