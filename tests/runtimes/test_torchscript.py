"""The TorchScript runtime on a small scripted module made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.schemas.registry import Signature, TensorSpec


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(
        self, features: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(features) * scale, features.sum(dim=1)


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    module = TwoHeads().eval()
    folder = tmp_path / "artifact"
    folder.mkdir()
    torch.jit.script(module).save(str(folder / "model.pt"))
    return module, folder


def expected(module: torch.nn.Module, x: np.ndarray, s: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in module(torch.tensor(x), torch.tensor(s))]


def test_names_come_from_the_scripted_forward(scripted: tuple[torch.nn.Module, Path]) -> None:
    module, folder = scripted
    rt = runtime_class("torchscript").load(folder, RuntimeOptions())
    rt.warmup()  # nothing to feed without dtypes: must not fail

    sig = rt.metadata()
    assert [s.name for s in sig.inputs] == ["features", "scale"]
    assert [s.name for s in sig.outputs] == ["output__0", "output__1"]

    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    s = np.full((5, 1), 2.0, dtype=np.float32)
    x.setflags(write=False)  # arrays from a worker frame are read-only
    out = rt.predict({"features": x, "scale": s})
    want = expected(module, x, s)
    assert sorted(out) == ["output__0", "output__1"]
    np.testing.assert_allclose(out["output__0"], want[0], rtol=1e-6)
    np.testing.assert_allclose(out["output__1"], want[1], rtol=1e-6)


def test_signature_from_the_registry_names_inputs_and_outputs(
    scripted: tuple[torch.nn.Module, Path],
) -> None:
    module, folder = scripted
    sig = Signature(
        inputs=[
            TensorSpec(name="x", dtype="float32", shape=[-1, 4]),
            TensorSpec(name="s", dtype="float32", shape=[-1, 1]),
        ],
        outputs=[
            TensorSpec(name="scores", dtype="float32", shape=[-1, 3]),
            TensorSpec(name="total", dtype="float32", shape=[-1]),
        ],
    )
    rt = runtime_class("torchscript").load(
        folder, RuntimeOptions(signature=sig, intra_op_threads=2)
    )
    rt.warmup()
    assert rt.metadata() == sig
    assert torch.get_num_threads() == 2

    x = np.ones((2, 4), dtype=np.float32)
    s = np.ones((2, 1), dtype=np.float32)
    out = rt.predict({"x": x, "s": s})
    want = expected(module, x, s)
    np.testing.assert_allclose(out["scores"], want[0], rtol=1e-6)
    np.testing.assert_allclose(out["total"], [4.0, 4.0])
