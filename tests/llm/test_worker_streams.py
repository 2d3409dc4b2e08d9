"""``Worker.generate`` / ``cancel`` against a stand-in worker process (tests/llm/fake_worker.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from modelplane.errors import BadRequest, Unavailable
from modelplane.serving.workers import Worker

FAKE = [sys.executable, str(Path(__file__).with_name("fake_worker.py"))]


class FakeProcessWorker(Worker):
    command = FAKE


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def started() -> Worker:
    w = FakeProcessWorker("transformers", "/nowhere", {})
    await w.start(20)
    assert w.generation is not None and w.generation["context_length"] == 8
    return w


def test_streams_interleave_and_end_with_done() -> None:
    async def main() -> None:
        w = await started()
        try:

            async def collect(n: int) -> list[str]:
                return [f["event"] async for f in w.generate({"prompt": "a", "max_tokens": n})]

            three, five = await asyncio.gather(collect(3), collect(5))
            assert three == ["start", "token", "token", "token", "done"]
            assert five == ["start", *["token"] * 5, "done"]
            assert w.streams == 0
            with pytest.raises(BadRequest, match="context is 8"):
                async for _ in w.generate({"prompt": "long!"}):
                    pass
        finally:
            await w.stop(2)

    run(main())


def test_leaving_early_sends_cancel() -> None:
    async def main() -> None:
        w = await started()
        try:
            frames = w.generate({"prompt": "a", "max_tokens": 1000})
            assert (await anext(frames))["event"] == "start"
            assert (await anext(frames))["event"] == "token"
            await frames.aclose()  # the worker drops the sequence and says "cancelled"
            assert w.streams == 0
            header, _ = await w._call({"op": "cancels"})
            assert header["cancels"] == 1
            # the worker is free and answers the next stream at once
            events = [f["event"] async for f in w.generate({"prompt": "a", "max_tokens": 1})]
            assert events == ["start", "token", "done"]
        finally:
            await w.stop(2)

    run(main())


def test_worker_death_ends_open_streams_with_503() -> None:
    async def main() -> None:
        w = await started()
        other = w.generate({"prompt": "a", "max_tokens": 10_000})
        assert (await anext(other))["event"] == "start"
        dying = w.generate({"prompt": "die"})
        assert (await anext(dying))["event"] == "start"
        for frames in (dying, other):
            with pytest.raises(Unavailable, match="exited"):
                async for _ in frames:
                    pass
        await asyncio.wait_for(w.exited.wait(), 5)
        assert not w.alive
        with pytest.raises(Unavailable):
            await anext(w.generate({"prompt": "a"}))

    run(main())
