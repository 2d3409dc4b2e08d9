"""The dynamic batcher with fake in-process workers: coalescing, splitting, limits, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from modelplane.errors import DeadlineExceeded, InvalidInput, PayloadTooLarge, Unavailable
from modelplane.serving.batcher import Batcher

Arrays = dict[str, np.ndarray]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    """Run a test body on a fresh event loop, bounded so that a hang fails instead."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def double(arrays: Arrays) -> Arrays:
    return {"y": arrays["x"] * 2}


class FakeWorker:
    """What the batcher needs of a worker: ``alive`` and ``async predict(arrays)``.

    With a gate, every call waits for the gate (set it to let calls through);
    ``calls`` records every batch the batcher sent.
    """

    def __init__(
        self, fn: Callable[[Arrays], Arrays] = double, gate: asyncio.Event | None = None
    ) -> None:
        self.alive = True
        self.fn = fn
        self.gate = gate
        self.calls: list[Arrays] = []
        self.started = asyncio.Event()

    async def predict(self, arrays: Arrays) -> Arrays:
        self.calls.append({k: v.copy() for k, v in arrays.items()})
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return self.fn(arrays)

    def rows(self) -> list[int]:
        return [len(next(iter(c.values()))) for c in self.calls]

    def saw(self, marker: float) -> bool:
        return any(bool((c["x"] == marker).any()) for c in self.calls)


def rows(n: int, value: float, width: int = 4, dtype: Any = np.float32) -> Arrays:
    return {"x": np.full((n, width), value, dtype=dtype)}


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.001)


async def blocked(batcher: Batcher, worker: FakeWorker) -> asyncio.Task[Arrays]:
    """Submit a first request and wait until the worker is busy with it."""
    first = asyncio.create_task(batcher.submit(rows(1, -1.0), None))
    await worker.started.wait()
    return first


# -- coalescing and splitting ---------------------------------------------------------
def test_concurrent_submits_are_coalesced_up_to_max_batch_size() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=4, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        waiting = [asyncio.create_task(b.submit(rows(1, i), None)) for i in range(10)]
        await until(lambda: len(b.queue) == 10)
        gate.set()
        results = await asyncio.gather(first, *waiting)
        assert worker.rows() == [1, 4, 4, 2]
        for i, out in enumerate(results[1:]):
            np.testing.assert_array_equal(out["y"], np.full((1, 4), 2.0 * i, np.float32))
        assert (b.stats.batches, b.stats.items, b.stats.rows) == (4, 11, 11)
        assert b.stats.sizes == {1: 1, 4: 2, 2: 1}

    run(main())


def test_outputs_are_split_back_to_the_right_callers() -> None:
    sizes = [1, 3, 2, 1, 4, 2, 3, 1]

    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        inputs = [
            {"x": np.arange(n * 4, dtype=np.float32).reshape(n, 4) + 100 * i}
            for i, n in enumerate(sizes)
        ]
        tasks = [asyncio.create_task(b.submit(x, None)) for x in inputs]
        await until(lambda: len(b.queue) == len(sizes))
        gate.set()
        results = await asyncio.gather(*tasks)
        await first
        for x, out in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(out["y"], x["x"] * 2)
        # Requests ride together but are never split across batches.
        assert worker.rows()[1:] == [7, 6, 4]

    run(main())


def test_a_lone_request_waits_up_to_max_delay_for_company() -> None:
    async def main() -> None:
        worker = FakeWorker()
        b = Batcher(max_batch_size=8, max_delay_s=0.5, max_queue=100)
        b.add_worker(worker)
        a = asyncio.create_task(b.submit(rows(1, 1.0), None))
        await asyncio.sleep(0.02)
        c = asyncio.create_task(b.submit(rows(2, 2.0), None))
        out_a, out_c = await asyncio.gather(a, c)
        assert worker.rows() == [3]
        np.testing.assert_array_equal(out_a["y"], np.full((1, 4), 2.0, np.float32))
        np.testing.assert_array_equal(out_c["y"], np.full((2, 4), 4.0, np.float32))

    run(main())


def test_without_delay_a_lone_request_runs_alone() -> None:
    async def main() -> None:
        worker = FakeWorker()
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        for i in range(3):
            out = await b.submit(rows(1, i), None)
            np.testing.assert_array_equal(out["y"], np.full((1, 4), 2.0 * i, np.float32))
        assert worker.rows() == [1, 1, 1]

    run(main())


def test_a_batch_that_fills_up_goes_without_waiting_out_the_delay() -> None:
    async def main() -> None:
        worker = FakeWorker()
        b = Batcher(max_batch_size=2, max_delay_s=60.0, max_queue=100)
        b.add_worker(worker)
        a = asyncio.create_task(b.submit(rows(1, 1.0), None))
        await asyncio.sleep(0.05)  # the dispatcher now waits for company
        c = asyncio.create_task(b.submit(rows(1, 2.0), None))
        # The batch is full: it must go now, not 60 s after the first request came.
        await asyncio.wait_for(asyncio.gather(a, c), 10)
        assert worker.rows() == [2]

    run(main(), timeout=90)


def test_incompatible_requests_go_in_separate_batches() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=16, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        inputs = [
            rows(1, 1.0, width=4),
            rows(2, 2.0, width=4),
            rows(1, 3.0, width=3),
            rows(1, 4.0, width=3),
            rows(1, 5.0, width=4, dtype=np.float64),
            rows(1, 6.0, width=4),
        ]
        tasks = [asyncio.create_task(b.submit(x, None)) for x in inputs]
        await until(lambda: len(b.queue) == len(inputs))
        gate.set()
        results = await asyncio.gather(*tasks)
        await first
        for x, out in zip(inputs, results, strict=True):
            assert out["y"].shape == x["x"].shape
            assert out["y"].dtype == x["x"].dtype
            np.testing.assert_array_equal(out["y"], x["x"] * 2)
        shapes = [(c["x"].shape, c["x"].dtype) for c in worker.calls[1:]]
        assert shapes == [
            ((3, 4), np.float32),
            ((2, 3), np.float32),
            ((1, 4), np.float64),
            ((1, 4), np.float32),
        ]

    run(main())


def test_requests_with_different_input_names_are_not_mixed() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(fn=lambda a: {n: v + 1 for n, v in a.items()}, gate=gate)
        b = Batcher(max_batch_size=16, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        one = asyncio.create_task(b.submit({"x": np.zeros((1, 2), np.float32)}, None))
        two = asyncio.create_task(b.submit({"z": np.zeros((1, 2), np.float32)}, None))
        await until(lambda: len(b.queue) == 2)
        gate.set()
        assert list((await one).keys()) == ["x"]
        assert list((await two).keys()) == ["z"]
        await first
        assert worker.rows() == [1, 1, 1]

    run(main())


def test_two_workers_run_two_batches_at_once() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        w1, w2 = FakeWorker(gate=gate), FakeWorker(gate=gate)
        b = Batcher(max_batch_size=1, max_delay_s=0.0, max_queue=100)
        b.add_worker(w1)
        b.add_worker(w2)
        tasks = [asyncio.create_task(b.submit(rows(1, i), None)) for i in range(4)]
        await w1.started.wait()
        await w2.started.wait()
        gate.set()
        results = await asyncio.gather(*tasks)
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["y"], np.full((1, 4), 2.0 * i, np.float32))
        assert len(w1.calls) + len(w2.calls) == 4

    run(main())


# -- limits ---------------------------------------------------------------------------
def test_full_queue_answers_unavailable_with_retry_after() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=1, max_delay_s=0.0, max_queue=2)
        b.add_worker(worker)
        first = await blocked(b, worker)
        queued = [asyncio.create_task(b.submit(rows(1, i), None)) for i in (1.0, 2.0)]
        await until(lambda: len(b.queue) == 2)
        with pytest.raises(Unavailable) as info:
            await b.submit(rows(1, 3.0), None)
        assert info.value.status == 503
        assert info.value.retry_after >= 1
        assert "queue is full" in info.value.message
        gate.set()
        await first
        for task, value in zip(queued, (1.0, 2.0), strict=True):
            np.testing.assert_array_equal((await task)["y"], np.full((1, 4), 2 * value))
        assert not worker.saw(3.0)

    run(main())


def test_more_rows_than_max_batch_size_is_payload_too_large() -> None:
    async def main() -> None:
        worker = FakeWorker()
        b = Batcher(max_batch_size=4, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        with pytest.raises(PayloadTooLarge) as info:
            await b.submit(rows(5, 1.0), None)
        assert info.value.status == 413
        assert "max_batch_size" in info.value.message
        assert worker.calls == []
        out = await b.submit(rows(4, 1.0), None)  # exactly the limit is fine
        assert out["y"].shape == (4, 4)

    run(main())


def test_deadline_passed_while_queued_fails_and_the_work_never_runs() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        with pytest.raises(DeadlineExceeded) as info:
            await b.submit(rows(1, 42.0), time.monotonic() + 0.05)
        assert info.value.status == 504
        gate.set()
        await first
        after = await b.submit(rows(1, 7.0), None)  # the dispatcher has been past it
        np.testing.assert_array_equal(after["y"], np.full((1, 4), 14.0, np.float32))
        assert not worker.saw(42.0)
        assert b.stats.items == 2

    run(main())


def test_a_deadline_far_enough_away_is_met() -> None:
    async def main() -> None:
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(FakeWorker())
        out = await b.submit(rows(2, 1.5), time.monotonic() + 30)
        np.testing.assert_array_equal(out["y"], np.full((2, 4), 3.0, np.float32))

    run(main())


def test_a_cancelled_submit_is_skipped() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        gone = asyncio.create_task(b.submit(rows(1, 42.0), None))
        await until(lambda: len(b.queue) == 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.set()
        await first
        after = await b.submit(rows(1, 7.0), None)
        np.testing.assert_array_equal(after["y"], np.full((1, 4), 14.0, np.float32))
        assert not worker.saw(42.0)
        assert b.stats.items == 2

    run(main())


# -- failures ---------------------------------------------------------------------------
def refuse_negative(arrays: Arrays) -> Arrays:
    if (arrays["x"] < 0).any():
        raise InvalidInput("model failed on this input: negative values")
    return double(arrays)


def test_one_bad_request_in_a_batch_fails_only_itself() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(fn=refuse_negative, gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = asyncio.create_task(b.submit(rows(1, 0.0), None))
        await worker.started.wait()
        good1 = asyncio.create_task(b.submit(rows(2, 1.0), None))
        bad = asyncio.create_task(b.submit(rows(1, -5.0), None))
        good2 = asyncio.create_task(b.submit(rows(1, 3.0), None))
        await until(lambda: len(b.queue) == 3)
        gate.set()
        await first
        np.testing.assert_array_equal((await good1)["y"], np.full((2, 4), 2.0, np.float32))
        np.testing.assert_array_equal((await good2)["y"], np.full((1, 4), 6.0, np.float32))
        with pytest.raises(InvalidInput) as info:
            await bad
        assert "negative" in info.value.message
        # The batch of three failed, then each ran alone.
        assert worker.rows() == [1, 4, 2, 1, 1]

    run(main())


def test_a_worker_that_is_unavailable_fails_its_batch() -> None:
    async def main() -> None:
        state = {"down": True}

        def flaky(arrays: Arrays) -> Arrays:
            if state["down"]:
                raise Unavailable("model worker exited", retry_after=1)
            return double(arrays)

        gate = asyncio.Event()
        worker = FakeWorker(fn=flaky, gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        tasks = [asyncio.create_task(b.submit(rows(1, i), None)) for i in range(3)]
        await until(lambda: len(b.queue) == 3)
        gate.set()
        for task in [first, *tasks]:
            with pytest.raises(Unavailable):
                await task
        assert worker.rows() == [1, 3]  # not retried one by one: the worker is gone
        state["down"] = False
        out = await b.submit(rows(1, 4.0), None)
        np.testing.assert_array_equal(out["y"], np.full((1, 4), 8.0, np.float32))

    run(main())


def test_an_unexpected_worker_error_fails_the_batch_instead_of_hanging() -> None:
    async def main() -> None:
        calls = {"n": 0}

        def broken_once(arrays: Arrays) -> Arrays:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionResetError("worker socket reset")
            return double(arrays)

        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        worker = FakeWorker(fn=broken_once)
        b.add_worker(worker)
        dispatcher = b._tasks[worker]  # to collect its exception, whatever happens
        try:
            with pytest.raises(Exception) as info:
                await asyncio.wait_for(b.submit(rows(1, 1.0), None), 2)
            assert not isinstance(info.value, TimeoutError)
            out = await asyncio.wait_for(b.submit(rows(1, 2.0), None), 5)
            np.testing.assert_array_equal(out["y"], np.full((1, 4), 4.0, np.float32))
        finally:
            if dispatcher.done() and not dispatcher.cancelled():
                dispatcher.exception()
            b.close("test over")

    run(main())


def test_outputs_that_are_not_batch_aligned_are_answered_one_by_one() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(fn=lambda a: {"total": np.array(a["x"].sum())}, gate=gate)
        b = Batcher(max_batch_size=8, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        tasks = [asyncio.create_task(b.submit(rows(1, v), None)) for v in (1.0, 2.0)]
        await until(lambda: len(b.queue) == 2)
        gate.set()
        await first  # alone, any output shape is its own
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        assert not any(isinstance(a, BaseException) for a in answers), answers
        assert [float(a["total"]) for a in answers] == [4.0, 8.0]

    run(main())


# -- drain and close ---------------------------------------------------------------------
def test_drain_waits_for_in_flight_work() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=1, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        first = await blocked(b, worker)
        second = asyncio.create_task(b.submit(rows(1, 5.0), None))
        await until(lambda: len(b.queue) == 1)
        drain = asyncio.create_task(b.drain(timeout=20))
        await asyncio.sleep(0.05)
        assert not drain.done()  # one request runs, one waits: not idle
        gate.set()
        await drain
        assert first.done() and second.done()
        np.testing.assert_array_equal(second.result()["y"], np.full((1, 4), 10.0, np.float32))

    run(main())


def test_drain_of_an_idle_batcher_returns_at_once_and_a_stuck_one_gives_up() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=1, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        await asyncio.wait_for(b.drain(timeout=20), 5)
        first = await blocked(b, worker)
        await b.drain(timeout=0.05)  # gives up quietly after its timeout
        assert not first.done()
        gate.set()
        await first

    run(main())


def test_close_fails_queued_requests_with_unavailable() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        worker = FakeWorker(gate=gate)
        b = Batcher(max_batch_size=1, max_delay_s=0.0, max_queue=100)
        b.add_worker(worker)
        await blocked(b, worker)
        queued = [asyncio.create_task(b.submit(rows(1, i), None)) for i in range(3)]
        await until(lambda: len(b.queue) == 3)
        b.close("deployment was updated; retry")
        for task in queued:
            with pytest.raises(Unavailable, match="deployment was updated"):
                await task
        gate.set()

    run(main())
