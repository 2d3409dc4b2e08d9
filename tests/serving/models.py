"""Small ONNX models built on the fly for the serving tests (no downloads)."""

from __future__ import annotations

import functools
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _model(graph: onnx.GraphProto, opsets: list[onnx.OperatorSetIdProto] | None = None) -> bytes:
    model = helper.make_model(graph, opset_imports=opsets or OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)  # what the registry runs on upload
    return bytes(model.SerializeToString())


def scale_onnx(factor: float, width: int = 4) -> bytes:
    """``y = factor * x`` for ``x: float32[batch, width]`` (distinguishable versions)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    k = numpy_helper.from_array(np.array(factor, dtype=np.float32), name="k")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], [k])
    return _model(graph)


def unknown_op_onnx(width: int = 4) -> bytes:
    """Passes ``onnx.checker`` (ops of unknown domains are not checked) but onnxruntime
    refuses to load it: ``com.example.unknown:Frobnicate`` is no registered op."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.unknown")
    graph = helper.make_graph([node], "broken", [x], [y])
    return _model(graph, [*OPSET, helper.make_opsetid("com.example.unknown", 1)])


def strings_onnx(width: int = 2) -> bytes:
    """``y = x`` for ``x: string[batch, width]`` (a model that takes BYTES tensors)."""
    x = helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["batch", width])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo", [x], [y])
    return _model(graph)


def scalar_output_onnx(width: int = 4) -> bytes:
    """``total = sum(x)``: a 0-d output for ``x: float32[batch, width]``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [])
    node = helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)
    graph = helper.make_graph([node], "total", [x], [total])
    return _model(graph)


def slow_onnx(layers: int, n: int = 1024, width: int = 4, factor: float = 2.0) -> bytes:
    """``y = factor * x`` that first runs ``layers`` [1, n] x [n, n] MatMuls per row.

    The chain feeds the output (times zero) so onnxruntime cannot prune it; the
    [n, n] weight is shared by every layer, so the file stays ~4 MB.
    """
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    inits = [
        numpy_helper.from_array(np.full((width, n), 1.0 / width, np.float32), "a"),
        numpy_helper.from_array(np.eye(n, dtype=np.float32), "w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(factor, np.float32), "k"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "a"], ["h0"])]
    nodes += [helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]) for i in range(layers)]
    nodes += [
        helper.make_node("ReduceMean", [f"h{layers}"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Mul", ["x", "k"], ["x2"]),
        helper.make_node("Add", ["x2", "m0"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "slow", [x], [y], inits))


def _seconds_per_call(model: bytes) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    x = np.ones((1, 4), np.float32)
    session.run(None, {"x": x})
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        session.run(None, {"x": x})
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def calibrated_slow_onnx(target_seconds: float = 0.12, factor: float = 2.0) -> bytes:
    """A ``slow_onnx`` whose one-row call takes about ``target_seconds`` on this CPU."""
    probe_layers = 40
    per_layer = _seconds_per_call(slow_onnx(probe_layers)) / probe_layers
    layers = int(min(max(target_seconds / max(per_layer, 1e-6), 10), 3000))
    return slow_onnx(layers, factor=factor)
