"""Backend step, TensorRT: an engine built from an exported ONNX, cached on disk.

Written against the TensorRT 10.x and 11.x Python APIs (Builder, OnnxParser,
build_serialized_network, Runtime.deserialize_cuda_engine, named I/O tensors with
set_tensor_address + execute_async_v3). **TensorRT cannot be installed in the workplace where
this package is developed, so this class has never been executed.** What is tested there:
the ONNX files it consumes (onnxruntime parity of the fp32, fp16 and INT8 QDQ exports), the
builder calls it makes for each API version (against a recording stand-in of the module),
and the engine-cache logic (pure functions). Torch tensors provide the device buffers.

Precision comes from the ONNX file, never from builder flags: TensorRT 11 removed
BuilderFlag.FP16 / INT8 and builds every network strongly typed; TensorRT 10 builds
strongly typed when asked (NetworkDefinitionCreationFlag.STRONGLY_TYPED, which 11 accepts
and ignores). So one build path serves both: 'fp16' parses the fp16 export (weights, inputs
and outputs in half precision), 'int8' the QDQ file of panoptic-ros-quantize --flavour
tensorrt (symmetric int8 Q/DQ, explicit quantisation), 'fp32' the plain export.

Cache: <cache_dir>/<onnx stem>-<key>.engine, key = sha256 of (ONNX bytes, GPU name and
compute capability, TensorRT version, input shape, precision): a new GPU, TensorRT upgrade,
input size, precision or model rebuilds the engine; anything else reuses it.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch

from panoptic_ros.core.backends import BackendUnavailable, cached_onnx
from panoptic_ros.core.model import output_names
from panoptic_ros.core.onnx_batch import rebatched_path

log = logging.getLogger('panoptic_ros.tensorrt')
TESTED_AGAINST = 'TensorRT 10.x and 11.x Python APIs (not executed here)'
PRECISIONS = ('fp16', 'fp32', 'int8')
SUPPORTED_MAJORS = (10, 11)


def engine_cache_key(onnx_bytes, gpu_name, compute_capability, trt_version, input_shape,
                     precision='fp16'):
    """Hex key identifying an engine build (see module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r} is not one of {PRECISIONS}')
    h = hashlib.sha256(onnx_bytes)
    h.update(json.dumps({'gpu': gpu_name, 'cc': list(compute_capability),
                         'trt': trt_version, 'shape': list(input_shape),
                         'precision': precision}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def engine_path(cache_dir, onnx_path, key):
    return Path(cache_dir) / f'{Path(onnx_path).stem}-{key}.engine'


def major_version(trt):
    """TensorRT's major version; BackendUnavailable outside SUPPORTED_MAJORS."""
    try:
        major = int(str(trt.__version__).split('.')[0])
    except ValueError as exc:
        raise BackendUnavailable(f'unreadable TensorRT version {trt.__version__!r}') from exc
    if major not in SUPPORTED_MAJORS:
        raise BackendUnavailable(f'TensorRT {trt.__version__} is not supported (needs 10 or '
                                 '11)')
    return major


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable('the tensorrt Python package is not installed') from exc
    if not hasattr(trt, 'Builder'):
        raise BackendUnavailable('tensorrt is a stub package without its libraries')
    if not torch.cuda.is_available():
        raise BackendUnavailable('TensorRT needs CUDA, which is not available')
    major_version(trt)
    return trt


def build_engine(trt, onnx_path, workspace_bytes=1 << 30):
    """Parse the ONNX into a strongly typed network (its types and Q/DQ nodes set the
    precision) and build a serialized engine (bytes)."""
    major_version(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # required on 10.x for precision from the graph; accepted and ignored on 11.x
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}')
    return bytes(serialized)


def source_onnx(model, cache_dir, precision, int8_onnx=None):
    """The ONNX an engine of `precision` is built from (exported and cached as needed)."""
    if precision == 'int8':
        from panoptic_ros.core.quantization import check_int8
        if int8_onnx is None:
            raise ValueError('an INT8 TensorRT engine needs the model\'s QDQ ONNX')
        check_int8(int8_onnx, model, flavour='tensorrt')
        return Path(int8_onnx)
    return cached_onnx(model, cache_dir, half=precision == 'fp16')


class TensorRTBackend:
    """Runs a cached TensorRT engine; inputs and outputs are torch CUDA tensors."""

    def __init__(self, engine_bytes, model_config, anchors, device, precision='fp16'):
        trt = _import_tensorrt()
        self.device = torch.device(device)
        self.model_config = model_config
        self.anchors = anchors
        self.input_dtype = torch.float16 if precision == 'fp16' else torch.float32
        self.name = 'tensorrt' if precision == 'fp16' else f'tensorrt_{precision}'
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailable('TensorRT could not deserialize the cached engine')
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.outputs = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(self.engine.get_tensor_shape(name))
                dtype = torch.float16 if self.engine.get_tensor_dtype(name) == \
                    trt.DataType.HALF else torch.float32
                self.outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, self.outputs[name].data_ptr())

    @classmethod
    def from_model(cls, model, cache_dir, device='cuda', precision='fp16', int8_onnx=None,
                   batch=1):
        """Export the ONNX (cached; rebatched for `batch` cameras), build or reuse the
        engine, and load it."""
        trt = _import_tensorrt()
        onnx_path = rebatched_path(source_onnx(model, cache_dir, precision, int8_onnx), batch,
                                   cache_dir)
        width, height = model.config.input_size
        index = torch.device(device).index or 0
        key = engine_cache_key(onnx_path.read_bytes(), torch.cuda.get_device_name(index),
                               torch.cuda.get_device_capability(index), trt.__version__,
                               (batch, 3, height, width), precision)
        path = engine_path(cache_dir, onnx_path, key)
        if path.is_file():
            log.info('TensorRT engine from cache %s', path)
            engine_bytes = path.read_bytes()
        else:
            log.warning('building TensorRT engine %s (first run on this GPU; minutes)', path)
            engine_bytes = build_engine(trt, onnx_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(engine_bytes)
        backend = cls(engine_bytes, model.config, model.anchors(), device, precision)
        backend.batch = batch
        return backend

    def __call__(self, x):
        x = x.to(self.device, self.input_dtype).contiguous()
        self.context.set_tensor_address('image', x.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        self.context.execute_async_v3(self.stream.cuda_stream)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return {k: self.outputs[k].float().clone() for k in output_names(self.model_config)}
