"""Backend step: run the network on a preprocessed batch, one small interface for every runtime.

    backend(x [B, 3, H, W] on backend.device, dtype backend.input_dtype)
        -> {'sem_logits', 'center_offsets', 'cls_logits', 'bbox_regression'
            [, 'center_heatmap']}    (model.py: output_names(config))

Every backend also exposes `name`, `device`, `model_config` (ModelConfig), `anchors` [A, 4]
and `batch`: the images one call takes (the number of cameras: the ONNX and TensorRT
backends run a static batch, core.onnx_batch; the PyTorch ones take any batch up to it).

- `TorchBackend`: PyTorch eager on CPU or CUDA, fp32 or fp16 (CUDA), frozen BatchNorm folded
  into the convolutions; optionally `torch.compile` (on CUDA with CUDA graphs:
  mode 'max-autotune' / 'reduce-overhead').
- `OnnxRuntimeBackend`: the exported ONNX (static shapes, opset 17) run by onnxruntime;
  `onnxruntime_int8` runs the model's INT8 QDQ file instead (core/quantization.py).
- `TensorRTBackend` (panoptic_ros.core.tensorrt_backend): an engine built from the fp16 export
  (`tensorrt`) or the TensorRT-flavour INT8 QDQ file (`tensorrt_int8`), cached on disk;
  written against TensorRT 10 and 11, **never executed in this workplace**.

`make_backend` picks one by name and falls back with a logged warning (TensorRT absent ->
PyTorch; no INT8 file for these weights -> fp32; CUDA absent -> CPU unless strict).
"""

import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from panoptic_ros.core.model import output_names

ONNX_OPSET = 17      # accepted by TensorRT 8.6 to 11.x and onnxruntime >= 1.14
EXPORT_REVISION = 'r2'   # in cached export names: r2 folds the encoder's Pads into its Convs
BACKENDS = ('torch', 'torch_compile', 'onnxruntime', 'onnxruntime_int8', 'tensorrt',
            'tensorrt_int8')
log = logging.getLogger('panoptic_ros.backends')


class BackendUnavailable(RuntimeError):
    """The runtime a backend needs is not installed or not usable on this machine."""


def _fold(conv, bn):
    """Fold a FrozenBatchNorm2d into the preceding Conv2d (in place)."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.bias)
    conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)


def fold_frozen_batchnorm(model):
    """Fold every Conv2d -> FrozenBatchNorm2d pair (Sequential neighbours, ResNet's
    conv{k}/bn{k} attributes, or the (conv, bn) attribute names a module lists in
    CONV_BN_PAIRS) into the convolution; returns the number folded."""
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (_, a), (name_b, b) in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, FrozenBatchNorm2d):
                    _fold(a, b)
                    module._modules[name_b] = nn.Identity()
                    folded += 1
        pairs = [(f'conv{k}', f'bn{k}') for k in range(1, 4)] + \
            list(getattr(module, 'CONV_BN_PAIRS', ()))
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, FrozenBatchNorm2d):
                _fold(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


class TorchBackend:
    """PyTorch eager or compiled. `compile`: None, 'default', 'reduce-overhead' (CUDA graphs)
    or 'max-autotune' (CUDA graphs + autotuned kernels)."""

    def __init__(self, model, device='cpu', half=False, compile=None):
        self.device = torch.device(device)
        if half and self.device.type != 'cuda':
            raise ValueError('fp16 is supported on CUDA only')
        self.model_config = model.config
        self.anchors = model.anchors()
        model = model.eval()
        fold_frozen_batchnorm(model)
        self.input_dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self.input_dtype)
        self.name = 'torch' + ('_compile' if compile else '') + ('_fp16' if half else '')
        self.batch = 1   # any batch runs; make_backend sets the cameras' number
        self._run = self.model
        if compile:
            self._run = torch.compile(self.model, mode=None if compile == 'default' else compile,
                                      fullgraph=True, dynamic=False)

    @torch.inference_mode()
    def __call__(self, x):
        out = self._run(x)
        # CUDA graphs reuse their output buffers: clone before the next replay overwrites them
        return {k: out[k].clone() if self.device.type == 'cuda' else out[k]
                for k in output_names(self.model_config)}


def export_onnx(model, path, opset=ONNX_OPSET, half=False):
    """Export `model` (eval, BatchNorm folded) with a static [1, 3, H, W] input, in fp32 or,
    with `half`, fp16 throughout (weights, input and outputs: what a strongly typed TensorRT
    network builds an fp16 engine from); zero Pads folded into the Convs that read them
    (onnx_graph.py)."""
    import copy
    import onnx
    from panoptic_ros.core.onnx_graph import fold_pads_into_convs
    model = copy.deepcopy(model).eval().cpu().float()
    fold_frozen_batchnorm(model)
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)
    width, height = model.config.input_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (no onnxscript dependency) warns that it is the legacy one
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, height, width, dtype=dtype),), str(path),
                          input_names=['image'], output_names=list(output_names(model.config)),
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    exported = onnx.load(str(path))
    if fold_pads_into_convs(exported):
        onnx.save(exported, str(path))
    return path


class OnnxRuntimeBackend:
    """onnxruntime InferenceSession on the exported ONNX (CPU provider unless given)."""

    def __init__(self, onnx_path, model_config, anchors, providers=None, threads=None,
                 batch=1, cache_dir=None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable('onnxruntime is not installed') from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        from panoptic_ros.core.onnx_batch import rebatched_path
        onnx_path = rebatched_path(onnx_path, batch, cache_dir or Path(onnx_path).parent)
        self.batch = batch
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=providers or ['CPUExecutionProvider'])
        self.device = torch.device('cpu')
        self.input_dtype = torch.float32
        self.model_config = model_config
        self.anchors = anchors
        self.name = 'onnxruntime'

    def __call__(self, x):
        names = output_names(self.model_config)
        outputs = self.session.run(list(names), {'image': x.cpu().numpy()})
        return {k: torch.from_numpy(v) for k, v in zip(names, outputs)}


def _int8_file(model_path, flavour, backend, input_size):
    """The INT8 QDQ file of the checkpoint at model_path for `flavour` (the one made for
    `input_size` where there is one), or None for a backend that does not need one."""
    if not backend.endswith('_int8'):
        return None
    if model_path is None:
        raise ValueError(f'backend {backend} needs the model file\'s path (its INT8 model '
                         'lies next to it)')
    from panoptic_ros.core.quantization import int8_path
    sized = int8_path(model_path, flavour, input_size)
    return sized if sized.is_file() else int8_path(model_path, flavour)


def resolve_device(device, strict=False):
    """'cuda' without CUDA -> 'cpu' with a warning (or BackendUnavailable when strict)."""
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        if strict:
            raise BackendUnavailable('device cuda requested but CUDA is not available '
                                     '(strict_device is set)')
        log.warning('device cuda requested but CUDA is not available: running on the CPU')
        return torch.device('cpu')
    return device


def make_backend(name, model, device='cpu', half=False, cache_dir=None, strict_device=False,
                 threads=None, model_path=None, batch=1):
    """Build backend `name` (one of BACKENDS) for `model` (SingleShotPanoptic, fp32, CPU).

    onnxruntime and tensorrt export the ONNX into `cache_dir` first (reused while the model
    and input size are unchanged). onnxruntime_int8 and tensorrt_int8 run the INT8 QDQ file
    next to `model_path` (quantization.int8_path); where it is missing or was quantised from
    other weights, onnxruntime_int8 falls back to onnxruntime in fp32 with a warning that
    names the command making it. Unavailable TensorRT falls back to PyTorch with a warning.
    `batch`: images per call (one per camera).
    """
    if name not in BACKENDS:
        raise ValueError(f'backend {name!r} is not one of {BACKENDS}')
    device = resolve_device(device, strict_device)
    half = half and device.type == 'cuda'
    if name in ('tensorrt', 'tensorrt_int8'):
        from panoptic_ros.core import tensorrt_backend
        try:
            return tensorrt_backend.TensorRTBackend.from_model(
                model, cache_dir or '.cache', device=device,
                precision='int8' if name == 'tensorrt_int8' else 'fp16',
                int8_onnx=_int8_file(model_path, 'tensorrt', name, model.config.input_size),
                batch=batch)
        except BackendUnavailable as exc:
            log.warning('TensorRT backend unavailable (%s): falling back to PyTorch %s',
                        exc, 'torch_compile' if device.type == 'cuda' else 'eager')
            name = 'torch_compile' if device.type == 'cuda' else 'torch'
    if name == 'onnxruntime_int8':
        from panoptic_ros.core.quantization import check_int8
        try:
            int8_onnx = _int8_file(model_path, 'cpu', name, model.config.input_size)
            check_int8(int8_onnx, model)
        except ValueError as exc:
            log.warning('INT8 model unusable (%s): falling back to onnxruntime in fp32', exc)
            name = 'onnxruntime'
        else:
            backend = OnnxRuntimeBackend(int8_onnx, model.config, model.anchors(),
                                         threads=threads, batch=batch,
                                         cache_dir=cache_dir or '.cache')
            backend.name = 'onnxruntime_int8'
            return backend
    if name == 'onnxruntime':
        onnx_path = cached_onnx(model, cache_dir or '.cache')
        return OnnxRuntimeBackend(onnx_path, model.config, model.anchors(), threads=threads,
                                  batch=batch, cache_dir=cache_dir or '.cache')
    compile = None
    if name == 'torch_compile':
        compile = 'max-autotune' if device.type == 'cuda' else 'default'
    backend = TorchBackend(model, device, half, compile=compile)
    backend.batch = batch
    return backend


def configure_torch_threads(backend, threads=0):
    """PyTorch's thread count for this process, given the backend that runs the network.

    With onnxruntime or TensorRT, PyTorch runs only the decode and the panoptic head: small
    ops where a thread pool costs more than it gives and its spinning workers take CPU from
    onnxruntime's (measured on the 2-core VM: head 13.7 -> 6.1 ms, network 30 -> 25 ms p50
    with 1 thread instead of 2), so 1. With the PyTorch backends: `threads` (0 = library
    default). Returns the thread count set, or None when left unchanged.
    """
    if backend.name in ('onnxruntime', 'onnxruntime_int8', 'tensorrt', 'tensorrt_int8'):
        torch.set_num_threads(1)
        return 1
    if threads:
        torch.set_num_threads(threads)
        return threads
    return None


def model_digest(model):
    """Short hash of the config and weights (names cached exports)."""
    import hashlib
    import json
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_onnx(model, cache_dir, half=False):
    """Export the ONNX (fp32, or fp16 with `half`) once per model digest into cache_dir;
    returns its path."""
    width, height = model.config.input_size
    path = Path(cache_dir) / (f'model-{model_digest(model)}-{width}x{height}-{EXPORT_REVISION}'
                              f'{"-fp16" if half else ""}.onnx')
    if not path.is_file():
        tmp = path.with_suffix('.tmp.onnx')
        export_onnx(model, tmp, half=half)
        tmp.replace(path)
    return path
