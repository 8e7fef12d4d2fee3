"""Backend step, INT8: static post-training quantisation of the exported ONNX to a QDQ model.

    fp32 ONNX (backends.cached_onnx) + calibration frames (uint8 RGB camera images)
      -> onnxruntime's shape pre-processing and quantize_static: QuantizeLinear /
         DequantizeLinear pairs around every quantisable op (or around the convolutions
         only), per-channel int8 weights, activation ranges by min-max over the calibration
         frames (or the mean of each frame's min and max)
      -> <model stem>.int8.onnx next to the model (or .int8-tensorrt.onnx), with the model's
         digest, the flavour and the calibration record in the ONNX metadata

Two flavours of the same quantisation, because the runtimes want different activations:
'cpu' (uint8 asymmetric activations, int8 weights: onnxruntime's fast U8S8 kernels on x86)
and 'tensorrt' (int8 symmetric activations and weights, biases left in float: the explicit
quantisation TensorRT accepts, standard-domain QuantizeLinear / DequantizeLinear only). The
backends `onnxruntime_int8` and `tensorrt_int8` run their flavour's file; one made for other
weights (the digest differs) or the other runtime is not used (onnxruntime_int8 then runs
fp32, with a warning naming the command that remakes it).

A network with Panoptic-DeepLab's center heatmap keeps the center branch's last convolution in
float: it gives the heatmap (peak 1) and the offsets (pixels) in one tensor, and quantised to
the offsets' range the heatmap comes in steps whose flat tops center_grouping's keypoint NMS
takes for several centres.

With `float_predictors`, every branch's predictor stays in float: the convolutions whose
outputs no other convolution reads (class logits, box distances and border-ness, semantic
logits, heatmap and offsets). They are a small part of the work (a few output channels
each), and the decoder reads their values directly: a box edge one int8 step off moves the
box, and the boxes' overlaps decide NMS and the cross-class vote.
"""

import json
from pathlib import Path
import tempfile

from panoptic_ros.core.backends import cached_onnx, model_digest
from panoptic_ros.core.onnx_graph import tensor_readers
from panoptic_ros.core.inference import Preprocessor

FLAVOURS = ('cpu', 'tensorrt')
METADATA_KEY = 'panoptic_ros'
CENTER_PREDICTOR = '/center_branch/predictor/Conv'    # the ONNX node, kept in float
# --convolutions-only: the convolutions, and the ReLU / ReLU6 right after a quantised one,
# which onnxruntime's quantiser removes by giving the convolution's output their range (one
# rounding, no float round trip between them)
CONVOLUTIONS = ['Conv', 'Relu', 'Clip']


def int8_path(model_path, flavour='cpu', input_size=None):
    """Where the INT8 model of the checkpoint at `model_path` lives: `<stem>.int8.onnx` at the
    size it was trained at, `<stem>.<W>x<H>.int8.onnx` for another network input size (the
    node's input_size), `.int8-tensorrt.onnx` for TensorRT."""
    model_path = Path(model_path)
    size = '' if input_size is None else '.{}x{}'.format(*input_size)
    suffix = '.int8.onnx' if flavour == 'cpu' else f'.int8-{flavour}.onnx'
    return model_path.with_name(model_path.stem + size + suffix)


def predictor_convolutions(graph):
    """Names of the Conv nodes of the onnx GraphProto `graph` (topologically sorted, as
    exported) whose output reaches no other Conv: each branch's last convolution."""
    readers = tensor_readers(graph)
    feeds_conv = {}          # node name: a Conv reads its output, directly or through others
    for node in reversed(graph.node):
        feeds_conv[node.name] = any(r.op_type == 'Conv' or feeds_conv[r.name]
                                    for out in node.output for r in readers.get(out, []))
    return [n.name for n in graph.node if n.op_type == 'Conv' and not feeds_conv[n.name]]


def _quantisation_options(flavour):
    from onnxruntime.quantization import QuantType
    if flavour == 'cpu':
        return dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={})
    if flavour == 'tensorrt':
        return dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True,
                                   'QuantizeBias': False})   # TensorRT: int8 Q/DQ only
    raise ValueError(f'flavour {flavour!r} is not one of {FLAVOURS}')


def quantize_model(model, frames, out_path, flavour='cpu', cache_dir=None, record=None,
                   keep_float=(), float_first=0, convolutions_only=False, moving_average=False,
                   float_predictors=False):
    """Quantise `model` (SingleShotPanoptic) on `frames` (uint8 RGB [h, w, 3] each, camera
    images: the same letterbox as at run time) into `out_path`; returns out_path.

    record: a dict stored in the metadata beside the digest (calibration data, command);
    keep_float: ONNX node names left in float (a layer that quantises badly; with the center
    heatmap, CENTER_PREDICTOR always is);
    float_first: the first N convolutions of the graph (the encoder's stem) left in float;
    float_predictors: each branch's last convolution (predictor_convolutions) left in float;
    convolutions_only: quantise the convolutions alone (the tensors they read and write, a
    ReLU or ReLU6 right after one taken into its output's range); the ops between them
    (GroupNorm and its scale and shift, additions, resizes) compute in float and add no int8
    rounding of their own;
    moving_average: each tensor's range is the mean over the frames of its per-frame min and
    max (onnxruntime's CalibMovingAverage, all frames in one pass), not the extremes over all
    frames: a value beyond a typical frame's range then saturates instead of coarsening the
    steps of every other value.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import onnx
    options = _quantisation_options(flavour)
    if moving_average:
        options['extra_options'] = {**options['extra_options'], 'CalibMovingAverage': True}
    frames = list(frames)
    if not frames:
        raise ValueError('quantisation needs at least one calibration frame')
    mc = model.config
    preprocess = Preprocessor(mc.input_size, mc.mean, mc.std)

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(frames)

        def get_next(self):
            rgb = next(self.remaining, None)
            return None if rgb is None else {'image': preprocess(rgb)[0].numpy()}

    with tempfile.TemporaryDirectory() as scratch:
        fp32 = cached_onnx(model, cache_dir or scratch)
        prepared = Path(scratch) / 'prepared.onnx'
        quant_pre_process(str(fp32), str(prepared))
        graph = onnx.load(str(prepared)).graph
        convs = [n.name for n in graph.node if n.op_type == 'Conv']
        keep_float = list(keep_float) + convs[:float_first]
        if float_predictors:
            keep_float += [n for n in predictor_convolutions(graph) if n not in keep_float]
        if mc.center_heatmap and CENTER_PREDICTOR not in keep_float:
            keep_float.append(CENTER_PREDICTOR)
        quantize_static(str(prepared), str(out_path), Frames(), quant_format=QuantFormat.QDQ,
                        per_channel=True, nodes_to_exclude=keep_float,
                        op_types_to_quantize=CONVOLUTIONS if convolutions_only else None,
                        **options)
    quantized = onnx.load(str(out_path))
    used = {node.domain for node in quantized.graph.node} | {'', 'ai.onnx'}
    kept = [o for o in quantized.opset_import if o.domain in used]   # no unused domains
    del quantized.opset_import[:]
    quantized.opset_import.extend(kept)
    meta = {'digest': model_digest(model), 'flavour': flavour, 'frames': len(frames),
            'kept_float': keep_float, 'convolutions_only': convolutions_only,
            'moving_average': moving_average, 'float_predictors': float_predictors,
            **(record or {})}
    onnx.helper.set_model_props(quantized, {METADATA_KEY: json.dumps(meta)})
    onnx.save(quantized, str(out_path))
    return Path(out_path)


def read_metadata(path):
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
             .metadata_props}
    return json.loads(props.get(METADATA_KEY, '{}'))


def _input_size(path):
    """(width, height) of the image input of an ONNX file."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return dims[3], dims[2]


def check_int8(path, model, flavour='cpu'):
    """ValueError naming the file and the command that makes it, unless `path` is the
    `flavour` INT8 model of exactly these weights."""
    path = Path(path)
    remake = (f'make it with `panoptic-ros-quantize --model MODEL --data ROOT --split SPLIT'
              f'{"" if flavour == "cpu" else " --flavour " + flavour}`')
    if not path.is_file():
        backend = 'onnxruntime_int8' if flavour == 'cpu' else f'{flavour}_int8'
        raise ValueError(f'backend {backend} needs the INT8 model {path}, which does not '
                         f'exist: {remake}')
    size = _input_size(path)
    if size != tuple(model.config.input_size):
        width, height = model.config.input_size
        raise ValueError(f'{path} takes {size[0]}x{size[1]} images, the network runs at '
                         f'{width}x{height} (input_size): {remake[:-1]} --input-size {width} '
                         f'{height}`')
    meta = read_metadata(path)
    if meta.get('digest') != model_digest(model) or meta.get('flavour') != flavour:
        raise ValueError(f'{path} was quantised from other weights or for another runtime '
                         f'(flavour {meta.get("flavour")!r}): {remake}')
    return meta
