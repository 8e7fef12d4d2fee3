"""The TensorRT backend, around TensorRT (which cannot be installed here).

Verifies: the engine builder asks TensorRT 10 and 11 for a strongly typed network and sets
no precision flag (the stand-in module below has no BuilderFlag, as TensorRT 11 has none;
any flag use fails), and refuses other major versions; the fp16 ONNX an fp16 engine is built
from is half precision throughout and matches the fp32 network within fp16 rounding in
onnxruntime; the shipped TensorRT-flavour INT8 file uses only standard int8 Q/DQ with zero
points 0 (symmetric) and opset 17, and the backend refuses the CPU-flavour file in its
place; the engine-cache key changes with each of its inputs; without TensorRT both
TensorRT backends fall back to PyTorch with a warning. Does not verify: that TensorRT parses
or runs these files (never executed in this workplace).
"""

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
from onnx import numpy_helper
import pytest
import torch

from panoptic_ros.core.backends import BackendUnavailable, cached_onnx, make_backend
from panoptic_ros.core.checkpoint import load_checkpoint
from panoptic_ros.core.inference import Preprocessor
from panoptic_ros.core.model import output_names
from panoptic_ros.core.quantization import int8_path
from panoptic_ros.core.settings import default_model_path
from panoptic_ros.core.tensorrt_backend import (build_engine, engine_cache_key, engine_path,
                                                source_onnx)

pytestmark = pytest.mark.pipeline
FRAME = default_model_path().parents[1] / 'docs' / 'sim_frame_seed5.png'


def recording_tensorrt(version):
    """A stand-in of the tensorrt module with the builder API both 10.x and 11.x share (no
    BuilderFlag: 11.x removed the precision flags), recording what the builder is asked."""
    calls = []

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(('pool', pool, size))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(('create_network', flags))
            return 'network'

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b'engine'

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse(self, data):
            calls.append(('parse', len(data)))
            return True

    module = SimpleNamespace(__version__=version, Builder=Builder, OnnxParser=OnnxParser,
                             Logger=lambda level: None, MemoryPoolType=SimpleNamespace(
                                 WORKSPACE='workspace'),
                             NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0))
    module.Logger.WARNING = 'warning'
    return module, calls


@pytest.mark.parametrize('version', ['10.3.0', '10.13.2', '11.0.0', '11.4.1'])
def test_engines_are_strongly_typed_without_precision_flags(version, tmp_path):
    onnx_path = tmp_path / 'model.onnx'
    onnx_path.write_bytes(b'12345')
    trt, calls = recording_tensorrt(version)
    assert build_engine(trt, onnx_path) == b'engine'
    assert calls == [('create_network', 1 << 0), ('parse', 5), ('pool', 'workspace', 1 << 30)]


@pytest.mark.parametrize('version', ['8.6.1', '9.3.0', '12.0.0', 'x'])
def test_other_tensorrt_versions_are_refused(version, tmp_path):
    trt, _ = recording_tensorrt(version)
    with pytest.raises(BackendUnavailable, match='TensorRT|version'):
        build_engine(trt, tmp_path / 'model.onnx')


def test_fp16_onnx_is_half_throughout_and_matches_fp32(tmp_path):
    model, _ = load_checkpoint(default_model_path())
    path = cached_onnx(model, tmp_path, half=True)
    assert path.name.endswith('-fp16.onnx')
    graph = onnx.load(str(path)).graph
    half = onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == half for v in [*graph.input, *graph.output])
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    rgb = cv2.cvtColor(cv2.imread(str(FRAME))[:480, :640], cv2.COLOR_BGR2RGB)
    mc = model.config
    x = Preprocessor(mc.input_size, mc.mean, mc.std)(np.ascontiguousarray(rgb))[0]
    outputs = session.run(None, {'image': x.numpy().astype(np.float16)})
    with torch.no_grad():
        reference = model.eval()(x)
    for name, value in zip(output_names(mc), outputs):
        error = np.linalg.norm(value.astype(np.float32) - reference[name].numpy()) / \
            np.linalg.norm(reference[name].numpy())
        assert error < 2e-2, (name, error)


def test_tensorrt_int8_file_is_symmetric_int8_and_checked(tmp_path):
    model, _ = load_checkpoint(default_model_path())
    path = int8_path(default_model_path(), 'tensorrt')
    quantized = onnx.load(str(path))
    assert [(o.domain, o.version) for o in quantized.opset_import] == [('', 17)]
    assert {node.domain for node in quantized.graph.node} == {''}
    initializers = {i.name: i for i in quantized.graph.initializer}
    zero_points = [numpy_helper.to_array(initializers[node.input[2]])
                   for node in quantized.graph.node
                   if node.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert len(zero_points) > 100
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert source_onnx(model, tmp_path, 'int8', path) == path
    with pytest.raises(ValueError, match='another runtime'):
        source_onnx(model, tmp_path, 'int8', int8_path(default_model_path(), 'cpu'))


def test_cache_key_and_fallback(tmp_path, caplog):
    args = (b'onnx', 'NVIDIA H100', (9, 0), '10.3.0', (1, 3, 240, 320))
    key = engine_cache_key(*args)
    assert key == engine_cache_key(*args)
    for changed in ((b'onnx2',) + args[1:], args[:1] + ('NVIDIA A100',) + args[2:],
                    args[:2] + ((8, 0),) + args[3:], args[:3] + ('11.0.0',) + args[4:],
                    args[:4] + ((1, 3, 480, 640),)):
        assert engine_cache_key(*changed) != key
    assert len({engine_cache_key(*args, precision=p) for p in ('fp16', 'fp32', 'int8')}) == 3
    with pytest.raises(ValueError, match='precision'):
        engine_cache_key(*args, precision='int4')
    assert engine_path(tmp_path, tmp_path / 'model-x.onnx', key).name == f'model-x-{key}.engine'
    model, _ = load_checkpoint(default_model_path())
    for name in ('tensorrt', 'tensorrt_int8'):
        caplog.clear()
        with caplog.at_level(logging.WARNING, 'panoptic_ros.backends'):
            backend = make_backend(name, model, cache_dir=tmp_path,
                                   model_path=default_model_path())
        assert backend.name == 'torch'
        assert 'TensorRT backend unavailable' in caplog.text and 'falling back' in caplog.text
