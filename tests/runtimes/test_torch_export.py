"""The torch.export runtime on a .pt2 program exported on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modelplane.runtimes import RuntimeOptions, runtime_class


class Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1) * ids.unsqueeze(1)


def test_pt2_serves_any_batch_size_with_the_programs_signature(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Scaled().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        module,
        (torch.randn(3, 4), torch.ones(3, dtype=torch.int64)),
        dynamic_shapes={"x": {0: batch}, "ids": {0: batch}},
    )
    folder = tmp_path / "artifact"
    folder.mkdir()
    torch.export.save(program, str(folder / "model.pt2"))

    rt = runtime_class("torch_export").load(folder, RuntimeOptions())
    rt.warmup()  # dtypes and shapes are known: a real warm-up batch runs
    sig = rt.metadata()
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("x", "float32", [-1, 4]),
        ("ids", "int64", [-1]),
    ]
    assert [s.name for s in sig.outputs] == ["output__0"]

    for rows in (1, 7):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        ids = np.arange(rows, dtype=np.int64)
        out = rt.predict({"x": x, "ids": ids})
        with torch.no_grad():
            want = module(torch.from_numpy(x), torch.from_numpy(ids)).numpy()
        assert out["output__0"].shape == (rows, 2)
        np.testing.assert_allclose(out["output__0"], want, rtol=1e-5, atol=1e-6)
