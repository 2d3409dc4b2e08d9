"""ONNX models on onnxruntime (also scikit-learn models converted with skl2onnx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions, single_file
from modelplane.schemas.registry import Signature, TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def _spec(arg: object) -> TensorSpec:
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in getattr(arg, "shape", []) or []]
    dtype = _ORT_TYPES.get(str(getattr(arg, "type", "")), "unknown")
    return TensorSpec(name=str(getattr(arg, "name", "")), dtype=dtype, shape=shape)


def _text(arr: np.ndarray) -> np.ndarray:
    """onnxruntime takes str for string tensors (bytes would become "b'…'")."""
    try:
        out = [x.decode() if isinstance(x, bytes) else x for x in arr.ravel().tolist()]
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"a string input is not valid UTF-8: {exc}") from exc
    return np.array(out, dtype=object).reshape(arr.shape)


def session(path: Path, options: RuntimeOptions) -> Any:
    """An onnxruntime CPU session with the thread settings every runtime shares."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not options.spin:  # on a shared CPU, spinning threads steal the gateway's time
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    format = "onnx"

    def __init__(self, session: object) -> None:
        self.session = session
        self._sig = Signature(
            inputs=[_spec(a) for a in session.get_inputs()],  # type: ignore[attr-defined]
            outputs=[_spec(a) for a in session.get_outputs()],  # type: ignore[attr-defined]
        )
        self._output_names = [o.name for o in self._sig.outputs]

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> OnnxRuntime:
        return cls(session(single_file(artifact_dir, (".onnx",)), options))

    def metadata(self) -> Signature:
        return self._sig

    def predict(self, inputs: Arrays) -> Arrays:
        inputs = {k: _text(v) if v.dtype == object else v for k, v in inputs.items()}
        results = self.session.run(self._output_names, inputs)  # type: ignore[attr-defined]
        return {name: np.asarray(r) for name, r in zip(self._output_names, results, strict=True)}
