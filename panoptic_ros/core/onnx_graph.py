"""Backend step, export: a pass on the exported ONNX graph before any runtime reads it.

`fold_pads_into_convs`: EfficientNet-Lite's TensorFlow "SAME" padding of a stride-2
convolution is asymmetric (the extra pixel on the bottom / right), which a PyTorch Conv2d
cannot express, so the export holds a zero Pad before each such Conv. ONNX's Conv (and
QLinearConv) takes asymmetric `pads` itself: the pass moves each constant zero Pad into the
Convs that read it, which computes the same values without copying the padded tensor. In the
INT8 QDQ files it matters most: a Pad there sits between the float ops and the quantiser,
where onnxruntime's own Pad fusion does not reach it.
"""

import numpy as np


def _constant(graph, name, producers, opset, depth=0):
    """The value of tensor `name` when it derives from constants alone (initializers,
    Constant nodes and ops on them, as the exporter writes F.pad's widths), as a numpy array,
    else None. Ops on constants are evaluated by onnx's reference runtime."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    initializer = next((t for t in graph.initializer if t.name == name), None)
    if initializer is not None:
        return numpy_helper.to_array(initializer)
    node = producers.get(name)
    if node is None or depth > 32 or node.domain not in ('', 'ai.onnx'):
        return None
    inputs = [_constant(graph, i, producers, opset, depth + 1) if i else None
              for i in node.input]
    if any(value is None for i, value in zip(node.input, inputs) if i):
        return None
    feeds = {i: value for i, value in zip(node.input, inputs) if i}
    outputs = ReferenceEvaluator(node, opsets={'': opset}).run(None, feeds)
    return outputs[list(node.output).index(name)]


def _foldable_pads(graph, pad, readers, outputs, producers, opset):
    """[top, left, bottom, right] of a constant zero Pad of an NCHW tensor read only as the
    data input of Convs with explicit pads, else None."""
    mode = next((a.s for a in pad.attribute if a.name == 'mode'), b'constant')
    widths, value = (_constant(graph, pad.input[k], producers, opset)
                     if len(pad.input) > k and pad.input[k] else default
                     for k, default in ((1, None), (2, 0)))
    if (mode != b'constant' or widths is None or widths.shape != (8,) or value is None
            or np.any(np.asarray(value) != 0) or len(pad.input) > 3
            or np.any(widths < 0) or np.any(widths[[0, 1, 4, 5]] != 0)
            or pad.output[0] in outputs or not readers):
        return None
    for conv in readers:
        auto_pad = next((a.s for a in conv.attribute if a.name == 'auto_pad'), b'NOTSET')
        if conv.op_type != 'Conv' or auto_pad != b'NOTSET' or list(conv.input).count(
                pad.output[0]) != 1 or conv.input[0] != pad.output[0]:
            return None
    return [int(w) for w in widths[[2, 3, 6, 7]]]


def tensor_readers(graph):
    """{tensor name: [the nodes of the onnx GraphProto `graph` that read it]}."""
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def fold_pads_into_convs(model):
    """Fold every foldable Pad of the onnx ModelProto `model` into its Convs, in place;
    returns the number of Pads removed."""
    from onnx import helper
    graph = model.graph
    outputs = {o.name for o in graph.output}
    opset = next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))
    producers = {name: node for node in graph.node for name in node.output}
    readers = tensor_readers(graph)
    folded = []
    for pad in [n for n in graph.node if n.op_type == 'Pad']:
        widths = _foldable_pads(graph, pad, readers.get(pad.output[0], []), outputs,
                                producers, opset)
        if widths is None:
            continue
        for conv in readers[pad.output[0]]:
            old = next((a for a in conv.attribute if a.name == 'pads'), None)
            pads = list(old.ints) if old is not None else [0, 0, 0, 0]
            pads = [p + w for p, w in zip(pads, widths)]
            if old is not None:
                conv.attribute.remove(old)
            conv.attribute.append(helper.make_attribute('pads', pads))
            conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    # the constants and ops on them that only the removed Pads read
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(folded)
