"""Text-generation streams of one replica: slots per worker, a bounded wait queue, routing.

Each worker of a text-generation replica runs a continuous-batching engine with
room for ``max_seqs`` sequences (the deployment's ``max_batch_size``). A new
stream goes to the least-loaded live worker with a free slot; when every slot
is taken it waits here, first come first served, in a queue of at most
``max_queue`` (full: 503 with Retry-After; waiting longer than the deployment's
``timeout_ms``: 504). A slot is freed when its stream ends, fails or is closed
early (client gone), and the next waiter takes it at once.

``open`` returns only once the worker admitted the prompt (its ``start`` frame),
so a prompt over the context fails with 400 before any response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from modelplane.errors import DeadlineExceeded, Unavailable
from modelplane.schemas.serving import DeploymentConfig
from modelplane.serving.workers import Worker

Frame = dict[str, Any]


def generation_options(config: DeploymentConfig) -> dict[str, int]:
    """What the worker's engine is told at load (``RuntimeOptions.extra``)."""
    return {"max_seqs": config.max_batch_size, "max_cached_tokens": config.max_cached_tokens}


class TextStream:
    """One admitted sequence: iterate for its ``token`` frames and the final ``done``.

    The slot is freed when ``done`` arrives, when the stream fails, or on ``aclose``;
    closing it early cancels the sequence in the worker. Iterate it from one task.
    """

    def __init__(
        self,
        frames: AsyncGenerator[Frame, None],
        start: Frame,
        release: Callable[[], None],
        version: int,
    ) -> None:
        self._frames = frames
        self._release: Callable[[], None] | None = release
        self.version = version
        self.prompt_tokens = int(start.get("prompt_tokens", 0))
        self.finished = False

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> Frame:
        if self._release is None:
            raise StopAsyncIteration
        try:
            frame = await anext(self._frames)
        except BaseException:
            await self.aclose()
            raise
        if frame.get("event") == "done":
            self.finished = True
            await self.aclose()
        return frame

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            await self._frames.aclose()
        finally:
            release()


class Streams:
    """Admission and routing for the streams of one replica (its workers list is shared)."""

    def __init__(
        self,
        workers: list[Worker],
        generation: dict[str, Any],
        max_seqs: int,
        max_queue: int,
        version: int,
    ) -> None:
        self.workers = workers  # the replica's own list: the manager adds and removes workers
        self.generation = generation
        # The engine's own cap (from its load reply) is the authority; the config asked for it.
        self.max_seqs = max(1, int(generation.get("max_seqs") or max_seqs))
        self.max_queue = max_queue
        self.version = version
        self.active = 0  # sequences holding a slot
        self.total = 0  # streams admitted since load
        self._load: dict[Worker, int] = {}
        self._waiters: deque[asyncio.Future[Worker]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed: str | None = None

    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def status(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "active_sequences": self.active,
            "queued_sequences": self.queued,
            "sequences_total": self.total,
        }

    async def open(self, request: dict[str, Any], deadline: float | None) -> TextStream:
        """Wait for a slot, send the request, and wait until the worker admits it."""
        worker = await self._acquire(deadline)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(worker)

        # The slot is free once the worker is done with the sequence, not once its frames
        # are read: a request's n choices may wait for slots its own finished ones hold.
        frames = worker.generate(request, on_end=release)
        try:
            start = await anext(frames)
        except BaseException:
            with contextlib.suppress(Exception):
                await frames.aclose()
            release()
            raise
        self.total += 1
        return TextStream(frames, start, release, self.version)

    # -- slots ---------------------------------------------------------------
    def _free_worker(self) -> Worker | None:
        best: Worker | None = None
        for w in self.workers:
            if not w.alive:
                continue
            n = self._load.get(w, 0)
            if n < self.max_seqs and (best is None or n < self._load.get(best, 0)):
                best = w
        return best

    def _take(self, worker: Worker) -> Worker:
        self._load[worker] = self._load.get(worker, 0) + 1
        self.active += 1
        self._idle.clear()
        return worker

    async def _acquire(self, deadline: float | None) -> Worker:
        if self._closed is not None:
            raise Unavailable(self._closed, retry_after=1)
        if not self.queued:
            worker = self._free_worker()
            if worker is not None:
                return self._take(worker)
        if self.queued >= self.max_queue:
            raise Unavailable(
                f"queue is full ({self.max_queue} requests waiting for a free sequence slot)",
                retry_after=1,
            )
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._idle.clear()
        timeout = None
        if deadline is not None and math.isfinite(deadline):
            timeout = max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())  # got a slot just as its caller left
            future.cancel()
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded("deadline passed while waiting for a sequence slot") from exc
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)
            self._settle()

    def _release(self, worker: Worker) -> None:
        n = self._load.get(worker, 0) - 1
        if n > 0:
            self._load[worker] = n
        else:
            self._load.pop(worker, None)
        self.active -= 1
        self.pump()

    def pump(self) -> None:
        """Hand free slots to waiters in order (after a release or a new worker)."""
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            worker = self._free_worker()
            if worker is None:
                break
            self._waiters.popleft().set_result(self._take(worker))
        self._settle()

    def _settle(self) -> None:
        if self.active == 0 and not self.queued:
            self._idle.set()

    # -- retiring ------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Wait until no stream runs or waits (streams in flight finish on this replica)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def close(self, reason: str) -> None:
        self._closed = reason
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(Unavailable(reason, retry_after=1))
