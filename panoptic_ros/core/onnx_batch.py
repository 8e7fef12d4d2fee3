"""Backend step, several cameras: an exported batch-1 ONNX file turned into one of static
batch B, so that the newest frames of B cameras run through the network in one call.

The exports (fp32, fp16, and the INT8 QDQ files quantised from them) have a static input
[1, 3, H, W]: TensorRT and onnxruntime plan static shapes best, and the INT8 file is
calibrated once. The batch enters such a graph only as the leading 1 of the input and output
shapes and of the constant target shapes of its Reshape and Resize nodes (the tracer writes
the batch of the example input into them). `rebatch` writes B there; every other dimension
stays as exported. A graph whose leading constant is not the batch (a Reshape that folds the
batch into another axis) is refused: `rebatch` checks with onnx's shape inference that every
output then has batch B, and the tests compare each image of a batched run with its batch-1
run for every architecture.
"""

import hashlib
from pathlib import Path

import numpy as np

SHAPE_INPUTS = {'Reshape': 1, 'Resize': 3}   # op -> index of its target-shape input


def _set_batch(value_info, batch, name):
    """Leading dimension 1 (or, for an output, one the exporter left symbolic) -> batch."""
    dims = value_info.type.tensor_type.shape.dim
    symbolic = len(dims) and name == 'output' and dims[0].HasField('dim_param')
    if not len(dims) or dims[0].dim_value != 1 and not symbolic:
        raise ValueError(f'{name} {value_info.name!r} has no static leading batch of 1')
    dims[0].dim_value = batch


def rebatch_model(model, batch):
    """A copy of the onnx ModelProto `model` (static batch 1) with static batch `batch`."""
    import onnx
    from onnx import numpy_helper
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for value_info in graph.input:
        _set_batch(value_info, batch, 'input')
    for value_info in graph.output:
        _set_batch(value_info, batch, 'output')
    del graph.value_info[:]   # intermediate shapes: inferred again below
    shape_names = {node.input[SHAPE_INPUTS[node.op_type]] for node in graph.node
                   if len(node.input) > SHAPE_INPUTS.get(node.op_type, 99)}
    shape_names.discard('')

    def patched(array):
        if array.dtype == np.int64 and array.ndim == 1 and len(array) >= 2 and array[0] == 1:
            array = array.copy()
            array[0] = batch
        return array

    for k, tensor in enumerate(graph.initializer):
        if tensor.name in shape_names:
            graph.initializer[k].CopyFrom(numpy_helper.from_array(
                patched(numpy_helper.to_array(tensor)), tensor.name))
    for node in graph.node:
        if node.op_type == 'Constant' and node.output[0] in shape_names:
            attribute = node.attribute[0]
            attribute.t.CopyFrom(numpy_helper.from_array(
                patched(numpy_helper.to_array(attribute.t)), attribute.t.name))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for value_info in inferred.graph.output:
        dims = value_info.type.tensor_type.shape.dim
        if not len(dims) or dims[0].dim_value != batch:
            raise ValueError(f'output {value_info.name!r} does not follow the batch after '
                             'rebatching: the graph folds its batch into another axis')
    return model


def rebatched_path(path, batch, cache_dir):
    """The batch-`batch` version of the ONNX file at `path`, made once into cache_dir (keyed
    by the file's content); batch 1 returns `path` itself."""
    path = Path(path)
    if batch == 1:
        return path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    out = Path(cache_dir) / f'{path.stem}-{digest}-b{batch}.onnx'
    if not out.is_file():
        import onnx
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix('.tmp.onnx')
        onnx.save(rebatch_model(onnx.load(str(path)), batch), str(tmp))
        tmp.replace(out)
    return out
