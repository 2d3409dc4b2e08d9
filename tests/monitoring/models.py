"""Tiny models made on the fly for the monitoring tests."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def text_embedding_onnx(width: int = 4) -> bytes:
    """An "embedding model" for ``/v1/embeddings``: strings [N] -> float32 [N, width] of ones.

    Shape of the string input, concatenated with ``width``, expands a constant: no tokenizer,
    no weights, but the signature (one string input, one 2-D float output) of a real one."""
    nodes = [
        helper.make_node("Shape", ["text"], ["n"]),
        helper.make_node("Concat", ["n", "width"], ["shape"], axis=0),
        helper.make_node("Expand", ["one"], ["embedding"], name="expand", **{}),
    ]
    nodes[2].input.append("shape")
    graph = helper.make_graph(
        nodes,
        "embed",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", width])],
        initializer=[
            helper.make_tensor("width", TensorProto.INT64, [1], [width]),
            helper.make_tensor("one", TensorProto.FLOAT, [1, 1], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
