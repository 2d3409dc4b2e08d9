"""What moving a tensor to a worker process and back costs: socket vs shared memory.

Runs the worker's ``echo`` op (no model work) for tensor sizes from 16 B to
16 MiB, once with the shared-memory arenas off (everything through the Unix
socket) and once on, and prints round-trip times and the speed-up.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.examples import double_onnx
from modelplane.serving.workers import Worker

SIZES = [16, 4096, 65536, 1 << 20, 16 << 20]
RESULTS = Path(__file__).parent / "results"


async def _round_trips(arena_bytes: int, model_dir: Path) -> dict[int, float]:
    opts = {"intra_op_threads": 1, "inter_op_threads": 1, "task": "", "signature": None}
    worker = Worker("onnx", str(model_dir), opts, arena_bytes)
    await worker.start(60)
    out: dict[int, float] = {}
    try:
        for size in SIZES:
            arrays = {"x": np.ones(size // 4, dtype=np.float32)}
            n = max(20, min(2000, (64 << 20) // size))
            for _ in range(5):
                await worker.echo(arrays)
            start = time.perf_counter()
            for _ in range(n):
                back = await worker.echo(arrays)
            out[size] = (time.perf_counter() - start) / n
            assert back["x"].shape == arrays["x"].shape
    finally:
        await worker.stop()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        (model_dir / "double.onnx").write_bytes(double_onnx())
        socket_only = asyncio.run(_round_trips(0, model_dir))
        shared = asyncio.run(_round_trips(64 << 20, model_dir))
    print(f"{'tensor':>10}  {'socket us':>10}  {'shm us':>10}  {'speed-up':>8}")
    rows = []
    for size in SIZES:
        a, b = socket_only[size] * 1e6, shared[size] * 1e6
        print(f"{size:>10}  {a:>10.1f}  {b:>10.1f}  {a / b:>7.2f}x")
        rows.append({"bytes": size, "socket_us": a, "shm_us": b})
    result = {"round_trips": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ipc.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
