"""Worker processes through their gateway-side handle: load, predict, crash, stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from modelplane.errors import InvalidInput, Unavailable
from modelplane.examples import double_onnx
from modelplane.serving.ipc import SHM_MIN
from modelplane.serving.workers import LoadFailed, Worker
from tests.serving.conftest import pid_alive
from tests.serving.models import calibrated_slow_onnx, strings_onnx, unknown_op_onnx

T = TypeVar("T")
OPTIONS: dict[str, Any] = {"intra_op_threads": 1, "inter_op_threads": 1, "task": ""}
ARENA = 4 * 1024 * 1024


def run(coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def model_dir(tmp_path: Path, content: bytes, name: str = "m") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.onnx").write_bytes(content)
    return str(folder)


def shm_segments(pid: int) -> set[str]:
    """The shared-memory files a process has mapped."""
    with open(f"/proc/{pid}/maps") as fh:
        return {line.split()[-1] for line in fh if "/dev/shm/psm_" in line}


async def wait_gone(pid: int, timeout: float = 20) -> bool:
    for _ in range(int(timeout / 0.05)):
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not pid_alive(pid)


def test_a_worker_loads_and_answers_small_and_large_batches(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, double_onnx()), dict(OPTIONS), ARENA)
        await w.start(timeout=60)
        try:
            assert w.alive and w.pid is not None
            assert [i["name"] for i in w.signature["inputs"]] == ["x"]
            assert [o["name"] for o in w.signature["outputs"]] == ["y"]
            small = np.arange(8, dtype=np.float32).reshape(2, 4)
            np.testing.assert_array_equal((await w.predict({"x": small}))["y"], small * 2)
            large = np.arange(4 * SHM_MIN, dtype=np.float32).reshape(-1, 4)  # via the arena
            np.testing.assert_array_equal((await w.predict({"x": large}))["y"], large * 2)
            too_big = np.ones((ARENA // 8, 4), np.float32)  # larger than the arena: inline
            np.testing.assert_array_equal((await w.predict({"x": too_big}))["y"], too_big * 2)
        finally:
            await w.stop()

    run(main())


def test_many_calls_in_flight_each_get_their_own_answer(tmp_path: Path) -> None:
    """Only a call that is alone in flight may use the arena: none may read another's data."""

    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, double_onnx()), dict(OPTIONS), ARENA)
        await w.start(timeout=60)
        try:
            inputs = [
                np.full((rows, 4), i, np.float32)
                for i, rows in enumerate([1, SHM_MIN // 4, 3, SHM_MIN, 2, SHM_MIN // 2] * 5)
            ]
            results = await asyncio.gather(*(w.predict({"x": x}) for x in inputs))
            for x, out in zip(inputs, results, strict=True):
                np.testing.assert_array_equal(out["y"], x * 2)
        finally:
            await w.stop()

    run(main())


def test_bytes_tensors_round_trip_through_a_worker(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, strings_onnx()), dict(OPTIONS), ARENA)
        await w.start(timeout=60)
        try:
            x = np.array([["a", "ünï"], ["", "x" * 100]], dtype=object)
            out = await w.predict({"x": x})
            assert out["y"].tolist() == x.tolist()
        finally:
            await w.stop()

    run(main())


def test_a_bad_input_fails_that_call_and_the_worker_lives_on(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, double_onnx()), dict(OPTIONS), 0)
        await w.start(timeout=60)
        try:
            with pytest.raises(InvalidInput, match="model failed on this input"):
                await w.predict({"x": np.ones((2, 3), np.float32)})
            assert w.alive
            out = await w.predict({"x": np.ones((1, 4), np.float32)})
            np.testing.assert_array_equal(out["y"], np.full((1, 4), 2.0, np.float32))
        finally:
            await w.stop()

    run(main())


def test_a_model_that_fails_to_load_says_why_and_leaves_no_process(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, unknown_op_onnx()), dict(OPTIONS), ARENA)
        with pytest.raises(LoadFailed, match="Frobnicate") as info:
            await w.start(timeout=60)
        assert "not a registered" in str(info.value)
        assert w.pid is not None
        assert await wait_gone(w.pid)
        await w.stop()

    run(main())


def test_an_unknown_format_fails_to_load(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker("no-such-format", model_dir(tmp_path, double_onnx()), dict(OPTIONS), 0)
        with pytest.raises(LoadFailed, match="no runtime serves format"):
            await w.start(timeout=60)
        await w.stop()

    run(main())


def test_a_killed_worker_fails_its_calls_at_once_and_frees_its_shared_memory(
    tmp_path: Path,
) -> None:
    slow = calibrated_slow_onnx()
    segments: set[str] = set()

    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, slow), dict(OPTIONS), ARENA)
        exits: list[Worker] = []
        w.on_exit = exits.append
        await w.start(timeout=60)
        assert w.pid is not None
        segments.update(shm_segments(w.pid))
        assert len(segments) == 2  # one arena per direction
        calls = [
            asyncio.create_task(w.predict({"x": np.full((1, 4), i, np.float32)})) for i in range(20)
        ]
        await asyncio.sleep(0.3)  # a few slow calls are done, the others still wait
        os.kill(w.pid, signal.SIGKILL)
        _, pending = await asyncio.wait(calls, timeout=20)
        assert not pending  # nobody hangs
        failed = [c for c in calls if c.exception() is not None]
        assert failed, "the kill came too late to catch a call in flight"
        for call in failed:
            assert isinstance(call.exception(), Unavailable)
            assert "exited" in str(call.exception())
        for i, call in enumerate(calls):
            if call.exception() is None:
                np.testing.assert_array_equal(call.result()["y"], np.full((1, 4), 2 * i))
        await asyncio.wait_for(w.exited.wait(), 20)
        assert not w.alive
        for _ in range(400):  # the supervisor hears of it once the process is reaped
            if exits:
                break
            await asyncio.sleep(0.05)
        assert exits == [w]
        with pytest.raises(Unavailable):
            await w.predict({"x": np.ones((1, 4), np.float32)})

    run(main())
    assert not any(os.path.exists(s) for s in segments)


def test_stop_ends_the_process_and_frees_its_shared_memory(tmp_path: Path) -> None:
    segments: set[str] = set()

    async def main() -> None:
        w = Worker("onnx", model_dir(tmp_path, double_onnx()), dict(OPTIONS), ARENA)
        exits: list[Worker] = []
        w.on_exit = exits.append
        await w.start(timeout=60)
        assert w.pid is not None
        segments.update(shm_segments(w.pid))
        assert segments
        await w.stop()
        assert await wait_gone(w.pid)
        assert not w.alive
        assert exits == []  # a stop is not a crash: nobody restarts it

    run(main())
    assert not any(os.path.exists(s) for s in segments)
