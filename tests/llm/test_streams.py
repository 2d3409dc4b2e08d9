"""Sequence slots, routing and the wait queue of ``serving/streams.py``, with stand-in workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, cast

import pytest

from modelplane.errors import BadRequest, DeadlineExceeded, Unavailable
from modelplane.serving.streams import Streams, TextStream
from modelplane.serving.workers import Worker, stream_error


class FakeWorker:
    """Speaks ``Worker.generate``: start, one token per ``step`` event, done."""

    def __init__(self, name: str, refuse: str | None = None) -> None:
        self.name, self.refuse = name, refuse
        self.alive = True
        self.step = asyncio.Event()
        self.cancelled = 0
        self.requests: list[dict[str, Any]] = []

    async def generate(
        self, request: dict[str, Any], on_end: Callable[[], None] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        self.requests.append(request)
        done = False
        try:
            if self.refuse:
                raise stream_error({"ok": False, "status": 400, "error": self.refuse})
            yield {"ok": True, "event": "start", "prompt_tokens": 2}
            for _ in range(int(request.get("max_tokens", 1))):
                await self.step.wait()
                yield {"ok": True, "event": "token", "text": "x", "tokens": [1]}
            done = True
            yield {"ok": True, "event": "done", "text": "", "finish_reason": "length"}
        finally:
            if not done and not self.refuse:
                self.cancelled += 1
            if on_end is not None:
                on_end()


def streams(*workers: FakeWorker, max_seqs: int = 1, max_queue: int = 4) -> Streams:
    gen = {"context_length": 16}
    return Streams(cast(list[Worker], list(workers)), gen, max_seqs, max_queue, version=1)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


async def _frames(s: TextStream) -> list[dict[str, Any]]:
    return [f async for f in s]


def test_least_loaded_worker_gets_the_stream_and_slots_free_when_done() -> None:
    async def main() -> None:
        a, b = FakeWorker("a"), FakeWorker("b")
        st = streams(a, b, max_seqs=2)
        opened = [await st.open({"max_tokens": 1}, None) for _ in range(4)]
        assert (len(a.requests), len(b.requests)) == (2, 2)
        assert st.status()["active_sequences"] == 4 and opened[0].prompt_tokens == 2
        a.step.set()
        b.step.set()
        frames = await _frames(opened[0])
        assert [f["event"] for f in frames] == ["token", "done"] and opened[0].finished
        assert st.active == 3
        for s in opened[1:]:
            await _frames(s)
        assert st.active == 0 and st.total == 4

    run(main())


def test_waiters_get_slots_in_order_and_a_full_queue_is_503() -> None:
    async def main() -> None:
        w = FakeWorker("w")
        st = streams(w, max_seqs=1, max_queue=2)
        first = await st.open({"max_tokens": 1, "n": 0}, None)
        waiting = [asyncio.create_task(st.open({"max_tokens": 1, "n": i}, None)) for i in (1, 2)]
        await asyncio.sleep(0)
        assert st.queued == 2
        with pytest.raises(Unavailable, match="queue is full") as full:
            await st.open({}, None)
        assert full.value.retry_after >= 1
        await first.aclose()  # not finished: cancelled in the worker, slot to the first waiter
        assert w.cancelled == 1
        second = await waiting[0]
        assert not waiting[1].done() and [r["n"] for r in w.requests] == [0, 1]
        w.step.set()
        await _frames(second)
        third = await waiting[1]
        await _frames(third)
        assert st.active == 0 and st.queued == 0

    run(main())


def test_a_waiter_past_its_deadline_or_cancelled_takes_no_slot() -> None:
    async def main() -> None:
        w = FakeWorker("w")
        st = streams(w)
        held = await st.open({"max_tokens": 1}, None)
        with pytest.raises(DeadlineExceeded):
            await st.open({}, time.monotonic() + 0.05)
        gone = asyncio.create_task(st.open({}, None))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert st.queued == 0
        await held.aclose()
        assert st.active == 0
        again = await asyncio.wait_for(st.open({"max_tokens": 0}, None), 1)
        assert [f["event"] for f in await _frames(again)] == ["done"]

    run(main())


def test_refused_prompt_frees_its_slot() -> None:
    async def main() -> None:
        st = streams(FakeWorker("w", refuse="prompt is 99 tokens; this model's context is 16"))
        for _ in range(3):  # one slot: a leak would make the second wait forever
            with pytest.raises(BadRequest, match="context is 16"):
                await asyncio.wait_for(st.open({}, None), 1)
        assert st.active == 0

    run(main())


def test_dead_workers_are_skipped_and_close_refuses_waiters() -> None:
    async def main() -> None:
        dead, live = FakeWorker("dead"), FakeWorker("live")
        dead.alive = False
        st = streams(dead, live)
        held = await st.open({"max_tokens": 1}, None)
        assert live.requests and not dead.requests
        waiter = asyncio.create_task(st.open({}, None))
        await asyncio.sleep(0)
        st.close("deployment was updated; retry")
        with pytest.raises(Unavailable, match="updated"):
            await waiter
        with pytest.raises(Unavailable):
            await st.open({}, None)
        drained = asyncio.create_task(st.drain(5))
        await asyncio.sleep(0)
        assert not drained.done()  # a stream in flight finishes first
        live.step.set()
        await _frames(held)
        await drained

    run(main())
