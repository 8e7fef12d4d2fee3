"""Backend step, TensorRT: an FP16 engine built from the exported ONNX, cached on disk.

Written against the TensorRT 10.x Python API (`tensorrt` 10.0-10.13: Builder,
OnnxParser, build_serialized_network, Runtime.deserialize_cuda_engine, named I/O tensors
with set_tensor_address + execute_async_v3). **TensorRT cannot be installed in the
workplace where this package is developed, so this class has never been executed.** What is
tested there: the ONNX it consumes (onnxruntime parity) and the engine-cache logic below
(pure functions). Torch tensors provide the device buffers, so no pycuda is needed.

Cache: <cache_dir>/<onnx stem>-<key>.engine, key = sha256 of (ONNX bytes, GPU name and
compute capability, TensorRT version, input shape, precision): a new GPU, TensorRT upgrade,
input size or model rebuilds the engine; anything else reuses it.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch

from panoptic_ros.core.backends import BackendUnavailable, cached_onnx
from panoptic_ros.core.model import output_names

log = logging.getLogger('panoptic_ros.tensorrt')
TESTED_AGAINST = 'TensorRT 10.x Python API (not executed here)'


def engine_cache_key(onnx_bytes, gpu_name, compute_capability, trt_version, input_shape,
                     fp16=True):
    """Hex key identifying an engine build (see module docstring)."""
    h = hashlib.sha256(onnx_bytes)
    h.update(json.dumps({'gpu': gpu_name, 'cc': list(compute_capability),
                         'trt': trt_version, 'shape': list(input_shape),
                         'precision': 'fp16' if fp16 else 'fp32'}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def engine_path(cache_dir, onnx_path, key):
    return Path(cache_dir) / f'{Path(onnx_path).stem}-{key}.engine'


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable('the tensorrt Python package is not installed') from exc
    if not hasattr(trt, 'Builder'):
        raise BackendUnavailable('tensorrt is a stub package without its libraries')
    if not torch.cuda.is_available():
        raise BackendUnavailable('TensorRT needs CUDA, which is not available')
    return trt


def build_engine(trt, onnx_path, fp16=True, workspace_bytes=1 << 30):
    """Parse the ONNX and build a serialized engine (bytes)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)   # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}')
    return bytes(serialized)


class TensorRTBackend:
    """Runs a cached TensorRT engine; inputs and outputs are torch CUDA tensors."""

    def __init__(self, engine_bytes, model_config, anchors, device):
        trt = _import_tensorrt()
        self.device = torch.device(device)
        self.model_config = model_config
        self.anchors = anchors
        self.input_dtype = torch.float32
        self.name = 'tensorrt'
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
    def from_model(cls, model, cache_dir, device='cuda', fp16=True):
        """Export the ONNX (cached), build or reuse the engine, and load it."""
        trt = _import_tensorrt()
        onnx_path = cached_onnx(model, cache_dir)
        width, height = model.config.input_size
        index = torch.device(device).index or 0
        key = engine_cache_key(onnx_path.read_bytes(), torch.cuda.get_device_name(index),
                               torch.cuda.get_device_capability(index), trt.__version__,
                               (1, 3, height, width), fp16)
        path = engine_path(cache_dir, onnx_path, key)
        if path.is_file():
            log.info('TensorRT engine from cache %s', path)
            engine_bytes = path.read_bytes()
        else:
            log.warning('building TensorRT engine %s (first run on this GPU; minutes)', path)
            engine_bytes = build_engine(trt, onnx_path, fp16)
            path.write_bytes(engine_bytes)
        return cls(engine_bytes, model.config, model.anchors(), device)

    def __call__(self, x):
        x = x.to(self.device, torch.float32).contiguous()
        self.context.set_tensor_address('image', x.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        self.context.execute_async_v3(self.stream.cuda_stream)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return {k: self.outputs[k].float().clone() for k in output_names(self.model_config)}
