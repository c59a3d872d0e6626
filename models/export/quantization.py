"""Dynamic-range int8 that the Task Library (tflite-support 0.4.4) can run, at per-channel accuracy.

Why this exists. ``converter.optimizations = [tf.lite.Optimize.DEFAULT]`` quantizes each dense
weight matrix **per output channel** by default; TF 2.21 writes such a hybrid matmul as
FULLY_CONNECTED version 12, which the 2022 TFLite runtime inside tflite-support 0.4.4 refuses
("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'"). With per-channel turned off
for dense layers the model runs, but one scale for a whole matrix costs accuracy: MiniLM's sentence
embeddings fell to cosine 0.95-0.98 against float, where per-channel kept 0.996-0.999.

The fix is a graph rewrite before conversion (channel equalization). For every matmul with a
constant weight ``K`` (``[in, out]``), with ``s = max |K[:, j]|`` per output channel::

    x @ K  ==  (x @ (K / s)) * s

``K / s`` has the same range in every column, so one per-tensor scale is as fine as a per-channel
one, and the old runtime gets an old op version. The multiply by ``s`` must survive the
converter, whose ``FuseFullyConnectedAndMul`` folds a constant multiply that directly follows a
FULLY_CONNECTED back into its weights, unless the multiply broadcasts its left operand to a new
shape. So ``s`` gets one more leading axis than ``y`` has dimensions and the product is reshaped
back: ``reshape(y * s[None, ..., None, :], shape(y))``. Nothing folds, dynamic shapes (a
``[1, None]`` sequence length) work too, and the cost is one elementwise multiply and a reshape
per matmul. (Tiling ``s`` to the output shape also blocks the fold, but only for static shapes;
a reshaped ``[G, out/G]`` view of ``s`` is moved and folded by the converter.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2

MATMULS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
MIN_WEIGHTS = 1024  # the converter leaves smaller constants in float anyway


def _flag(node: node_def_pb2.NodeDef, name: str) -> bool:
    # Reading node.attr[name] on a missing key would add it (a protobuf map): check first.
    return name in node.attr and node.attr[name].b


def _constant(nodes: dict[str, node_def_pb2.NodeDef], name: str) -> np.ndarray | None:
    """The value behind ``name`` if it is a float32 constant (through Identity / constant Reshape)."""
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity":
        node = nodes.get(node.input[0].split(":")[0])
    if node is None:
        return None
    if node.op == "Const":
        value = tf.make_ndarray(node.attr["value"].tensor)
        return value if value.dtype == np.float32 else None
    if node.op == "Reshape":
        value, shape = _constant(nodes, node.input[0]), _int_constant(nodes, node.input[1])
        return value.reshape(shape) if value is not None and shape is not None else None
    return None


def _int_constant(nodes: dict[str, node_def_pb2.NodeDef], name: str) -> np.ndarray | None:
    node = nodes.get(name.split(":")[0])
    if node is None or node.op != "Const":
        return None
    value = tf.make_ndarray(node.attr["value"].tensor)
    return value if value.dtype in (np.int32, np.int64) else None


def _const_node(name: str, value: np.ndarray) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=tf.float32.as_datatype_enum))
    node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(np.ascontiguousarray(value, np.float32))))
    return node


def _op(name: str, op: str, inputs: list[str], **type_attrs: tf.DType) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op=op, input=inputs)
    for key, dtype in type_attrs.items():
        node.attr[key].CopyFrom(attr_value_pb2.AttrValue(type=dtype.as_datatype_enum))
    return node


def _output_ranks(graph_def: graph_pb2.GraphDef) -> dict[str, int | None]:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return {n.name: graph.get_tensor_by_name(n.name + ":0").shape.rank for n in graph_def.node if n.op in MATMULS}


def equalize_channels(graph_def: graph_pb2.GraphDef) -> int:
    """Rewrite constant-weight matmuls in place as described in the module doc; returns how many."""
    nodes = {n.name: n for n in graph_def.node}
    ranks = _output_ranks(graph_def)
    added, count = [], 0
    for node in list(graph_def.node):
        if node.op not in MATMULS or _flag(node, "transpose_a") or _flag(node, "adj_x"):
            continue
        weights = _constant(nodes, node.input[1])
        if weights is None or weights.ndim != 2 or weights.size < MIN_WEIGHTS:
            continue
        transposed = _flag(node, "transpose_b") or _flag(node, "adj_y")
        kernel = weights.T if transposed else weights  # [in, out]
        rank = ranks.get(node.name)
        if not rank:
            continue
        scale = np.abs(kernel).max(axis=0)
        scale[scale == 0] = 1.0
        equalized = kernel / scale
        name = node.name
        matmul = node.name = f"{name}/equalized_matmul"
        node.input[1] = f"{name}/equalized_weights"
        added += [
            _const_node(node.input[1], equalized.T if transposed else equalized),
            _const_node(f"{name}/channel_scale", scale.reshape([1] * rank + [-1])),  # one axis more than y
            _op(f"{name}/scaled", "Mul", [matmul, f"{name}/channel_scale"], T=tf.float32),
            _op(f"{name}/shape", "Shape", [matmul], T=tf.float32, out_type=tf.int32),
            # takes the matmul's name: its consumers need no change
            _op(name, "Reshape", [f"{name}/scaled", f"{name}/shape"], T=tf.float32, Tshape=tf.int32),
        ]
        count += 1
    graph_def.node.extend(added)
    return count


def equalized_function(frozen):
    """A frozen concrete function with :func:`equalize_channels` applied (same inputs / outputs)."""
    graph_def = frozen.graph.as_graph_def()
    equalize_channels(graph_def)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    return wrapped.prune([graph.get_tensor_by_name(t.name) for t in frozen.inputs],
                         [graph.get_tensor_by_name(t.name) for t in frozen.outputs])


def configure_int8(converter) -> None:
    """Dynamic-range int8 with per-tensor dense weights: op versions tflite-support 0.4.4 runs."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001 (no public switch)
