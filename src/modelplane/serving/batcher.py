"""Dynamic batching with a bounded queue, deadlines and cancellation.

Requests to one deployment wait in one queue. Each worker process has a
dispatcher task: when its worker is free it takes up to ``max_batch_size``
compatible rows (waiting at most ``max_delay`` after the oldest request
arrived), concatenates them, runs them, and splits the outputs back. So while
a worker is busy, the next batch forms behind it, as in Triton's dynamic
batcher. A full queue answers 503; a passed deadline answers 504 and the work
is dropped if it has not started; a cancelled request (client gone) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from modelplane.errors import DeadlineExceeded, ModelplaneError, PayloadTooLarge, Unavailable
from modelplane.monitoring.metrics import BatchMonitor
from modelplane.monitoring.ticket import TICKET, Ticket
from modelplane.runtimes.base import Arrays
from modelplane.serving.workers import Worker

BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(slots=True)
class _Item:
    inputs: Arrays
    rows: int
    key: BatchKey
    future: asyncio.Future[Arrays]
    enqueued: float
    timer: asyncio.TimerHandle | None = None
    ticket: Ticket | None = None  # metrics and metering of the request (monitoring.ticket)


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    rows: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # rows per batch -> count


def batch_key(inputs: Arrays) -> BatchKey:
    return tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()))


class Batcher:
    def __init__(self, max_batch_size: int, max_delay_s: float, max_queue: int) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay_s)
        self.max_queue = max_queue
        self.queue: deque[_Item] = deque()
        self.stats = BatchStats()
        self.in_flight = 0
        self._ready = asyncio.Event()  # queue not empty
        self._full = asyncio.Event()  # a whole batch is waiting: stop waiting for more
        self._queued_rows = 0
        self._tasks: dict[Worker, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # Set by the manager when metrics are on: queue, batch and worker-time children.
        self.monitor: BatchMonitor | None = None

    # -- submitting ----------------------------------------------------------
    async def submit(self, inputs: Arrays, deadline: float | None) -> Arrays:
        rows = _rows(inputs)
        if rows > self.max_batch_size:
            raise PayloadTooLarge(
                f"batch of {rows} rows exceeds this deployment's max_batch_size of "
                f"{self.max_batch_size}"
            )
        if len(self.queue) >= self.max_queue:
            raise Unavailable(f"queue is full ({self.max_queue} requests waiting)", retry_after=1)
        loop = asyncio.get_running_loop()
        item = _Item(inputs, rows, batch_key(inputs), loop.create_future(), time.monotonic())
        item.ticket = TICKET.get()
        if deadline is not None and math.isfinite(deadline):
            item.timer = loop.call_at(
                loop.time() + (deadline - time.monotonic()), _expire, item.future
            )
        self.queue.append(item)
        self._queued_rows += rows
        if self._queued_rows >= self.max_batch_size:
            self._full.set()
        self._idle.clear()
        self._ready.set()
        if self.monitor is not None:
            self.monitor.queue_depth.set(len(self.queue))
        try:
            return await item.future
        finally:
            if item.timer is not None:
                item.timer.cancel()

    # -- workers -------------------------------------------------------------
    def add_worker(self, worker: Worker) -> None:
        self._tasks[worker] = asyncio.create_task(self._dispatch(worker))

    def remove_worker(self, worker: Worker) -> None:
        task = self._tasks.pop(worker, None)
        if task is not None:
            task.cancel()

    @property
    def workers(self) -> list[Worker]:
        return list(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait until nothing is queued or running (used before retiring a replica)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def close(self, reason: str) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        while self.queue:
            item = self.queue.popleft()
            if not item.future.done():
                item.future.set_exception(Unavailable(reason, retry_after=1))
        self._queued_rows = 0

    # -- dispatching ---------------------------------------------------------
    async def _dispatch(self, worker: Worker) -> None:
        while worker.alive:
            if not self.queue:
                self._ready.clear()
                if self.in_flight == 0:
                    self._idle.set()
                await self._ready.wait()
                continue
            if self.max_delay > 0 and self._queued_rows < self.max_batch_size:
                wait = self.queue[0].enqueued + self.max_delay - time.monotonic()
                if wait > 0:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), wait)
            batch = self._take()
            if batch:
                self.in_flight += 1
                try:
                    await self._run(worker, batch)
                finally:
                    self.in_flight -= 1

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        monitor = self.monitor
        now = time.monotonic() if monitor is not None else 0.0
        while self.queue:
            item = self.queue[0]
            if item.future.done():  # cancelled by its client, or its deadline passed
                self.queue.popleft()
                self._queued_rows -= item.rows
                continue
            if batch and (item.key != batch[0].key or rows + item.rows > self.max_batch_size):
                break
            self.queue.popleft()
            self._queued_rows -= item.rows
            batch.append(item)
            rows += item.rows
            if monitor is not None:
                monitor.queue_wait.observe(now - item.enqueued)
        if monitor is not None:
            monitor.queue_depth.set(len(self.queue))
        return batch

    async def _run(self, worker: Worker, batch: list[_Item]) -> None:
        inputs = batch[0].inputs if len(batch) == 1 else _concat([i.inputs for i in batch])
        monitor = self.monitor
        try:
            if monitor is None:
                outputs = await worker.predict(inputs)
            else:
                outputs, seconds = await worker.predict_timed(inputs)
                _account(monitor, batch, seconds)
        except Exception as exc:  # noqa: BLE001 - anything from a worker fails its batch, not the loop
            if not isinstance(exc, ModelplaneError):
                exc = Unavailable(f"model worker failed: {type(exc).__name__}", retry_after=1)
            if len(batch) > 1 and not isinstance(exc, Unavailable):
                # One bad request must not fail its neighbours: run them one by one.
                for item in batch:
                    await self._run(worker, [item])
                return
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._record(batch)
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        total = sum(i.rows for i in batch)
        if any(o.ndim == 0 or o.shape[0] != total for o in outputs.values()):
            # Outputs without a batch dimension cannot be split: answer each request alone.
            for item in batch:
                await self._run(worker, [item])
            return
        start = 0
        for item in batch:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({n: o[start:end] for n, o in outputs.items()})
            start = end

    def _record(self, batch: list[_Item]) -> None:
        rows = sum(i.rows for i in batch)
        s = self.stats
        s.batches += 1
        s.items += len(batch)
        s.rows += rows
        s.sizes[rows] = s.sizes.get(rows, 0) + 1


def _account(monitor: BatchMonitor, batch: list[_Item], seconds: float) -> None:
    """Record one batch's size and worker time; each request gets its share by rows."""
    rows = sum(i.rows for i in batch) if len(batch) > 1 else batch[0].rows
    monitor.batch_size.observe(rows)
    monitor.inference.observe(seconds)
    per_row = seconds / rows if rows else 0.0
    for item in batch:
        ticket = item.ticket
        if ticket is not None:
            ticket.rows += item.rows
            ticket.compute_seconds += per_row * item.rows


def _rows(inputs: Arrays) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def _concat(parts: list[Arrays]) -> Arrays:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _expire(future: asyncio.Future[Arrays]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("deadline passed before the model answered"))
