"""MLServer 1.7.1 custom runtime for bench/serving.py: the y = 2x ONNX model on onnxruntime.

Copied into MLServer's model folder and imported there (by MLServer's own venv,
not modelplane's). It runs the very ONNX file modelplane serves, on the same
engine with one intra-op thread, so the two servers differ only in what they
do around the model. A pure-numpy ``2 * x`` would skip onnxruntime's ~5 us per
call and flatter MLServer.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class DoubleOnnx(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = await get_model_uri(self._settings)
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        (y,) = self._session.run([self._output], {self._input: x})
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(self._output, y)]
        )
