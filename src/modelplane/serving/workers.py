"""Gateway-side handle of one worker process: start it, load a model, send batches.

A worker that exits (crash, kill, OOM) fails its in-flight requests at once with
503 and sets ``exited``; the deployment's supervisor then starts a new one.

A text-generation worker (its load reply carries ``generation``) also streams:
``generate`` sends one request and yields its event frames as the read loop
queues them per id; ``cancel`` asks the worker to drop a sequence without
waiting for an answer. A stream whose worker dies ends with 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any, ClassVar

from modelplane.errors import BadRequest, InvalidInput, ModelplaneError, Unavailable
from modelplane.runtimes.base import Arrays
from modelplane.serving.ipc import PREFIX, Arena, decode, encode


class LoadFailed(Exception):
    """The worker could not load or warm up the model; ``str()`` says why."""


def stream_error(frame: dict[str, Any]) -> ModelplaneError:
    """The domain error that a failed stream frame (``ok`` false) stands for."""
    message = str(frame.get("error") or "generation failed")
    status = frame.get("status")
    if status == 400:
        return BadRequest(message)
    if status == 503:
        return Unavailable(message, retry_after=1)
    return InvalidInput(message)


class Worker:
    # The worker program; tests swap in a stand-in that speaks the same frames.
    command: ClassVar[list[str]] = [sys.executable, "-m", "modelplane.serving.worker"]

    def __init__(
        self, fmt: str, artifact_dir: str, options: dict[str, Any], arena_bytes: int = 0
    ) -> None:
        self.fmt = fmt
        self.artifact_dir = artifact_dir
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.exited = asyncio.Event()
        self.load_seconds = 0.0
        self.signature: dict[str, Any] = {}
        self.generation: dict[str, Any] | None = None  # set when the model generates text
        self._streams: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._stream_ends: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], Arrays]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.on_exit: Callable[[Worker], None] | None = None
        self.stopping = False
        self.arena_bytes = arena_bytes
        self._outbox: Arena | None = None  # gateway -> worker
        self._inbox: Arena | None = None  # worker -> gateway

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and self.proc is not None

    async def start(self, timeout: float) -> None:
        if self.arena_bytes > 0:
            self._outbox, self._inbox = (
                Arena.create(self.arena_bytes),
                Arena.create(self.arena_bytes),
            )
        parent, child = socket.socketpair()
        try:
            # Popen (fork+exec) returns in a few ms; the slow part, loading, is awaited.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                [*self.command, str(child.fileno())],
                pass_fds=(child.fileno(),),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._reader_task = asyncio.create_task(self._read_loop(reader))
        try:
            header, _ = await asyncio.wait_for(
                self._call(
                    {
                        "op": "load",
                        "format": self.fmt,
                        "artifact_dir": self.artifact_dir,
                        "options": self.options,
                        "arenas": self._arena_names(),
                    }
                ),
                timeout,
            )
        except TimeoutError as exc:
            self.kill()
            raise LoadFailed(f"loading took longer than {timeout:.0f} s") from exc
        except Unavailable as exc:
            raise LoadFailed("worker process exited while loading the model") from exc
        if not header.get("ok"):
            self.kill()
            raise LoadFailed(str(header.get("error", "unknown error")))
        self.signature = header["signature"]
        generation = header.get("generation")
        self.generation = dict(generation) if isinstance(generation, dict) else None
        self.load_seconds = float(header.get("load_seconds", 0.0))

    def _arena_names(self) -> list[str] | None:
        if self._outbox is None or self._inbox is None:
            return None
        return [self._outbox.name, self._inbox.name]

    async def _call(
        self, header: dict[str, Any], arrays: Arrays | None = None
    ) -> tuple[dict[str, Any], Arrays]:
        if not self.alive or self._writer is None:
            raise Unavailable("model worker is not running", retry_after=1)
        rid = next(self._ids)
        fut: asyncio.Future[tuple[dict[str, Any], Arrays]] = (
            asyncio.get_running_loop().create_future()
        )
        # Shared memory only when nothing else is in flight: the worker has read every
        # earlier request and we have copied out every earlier answer.
        alone = not self._pending and self._outbox is not None
        self._pending[rid] = fut
        frame = encode({**header, "id": rid, "shm": alone}, arrays, self._outbox if alone else None)
        try:
            self._writer.writelines(frame)
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def predict(self, arrays: Arrays) -> Arrays:
        return (await self.predict_timed(arrays))[0]

    async def predict_timed(self, arrays: Arrays) -> tuple[Arrays, float]:
        """The outputs and the seconds the model call took, measured in the worker process."""
        header, out = await self._call({"op": "predict"}, arrays)
        if not header.get("ok"):
            raise InvalidInput(
                f"model failed on this input: {header.get('error', 'unknown error')}"
            )
        return out, float(header.get("seconds", 0.0))

    async def echo(self, arrays: Arrays) -> Arrays:
        """Send arrays to the worker and back, without touching the model."""
        _, out = await self._call({"op": "echo"}, arrays)
        return out

    @property
    def streams(self) -> int:
        """Sequences this worker is generating (or holding in its own queue) now."""
        return len(self._streams)

    async def generate(
        self, request: dict[str, Any], on_end: Callable[[], None] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Send one generate request; yield its ``start``, ``token`` and ``done`` frames.

        A frame with ``ok`` false raises its domain error. Leaving the iteration early
        (``aclose``, cancellation) before ``done`` sends ``cancel``, so the worker frees
        the slot at its next step. ``on_end`` is called once as soon as the sequence is
        over in the worker (its last frame arrived, or it was cancelled), even while its
        frames still wait to be read.
        """
        if not self.alive or self._writer is None:
            raise Unavailable("model worker is not running", retry_after=1)
        rid = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._streams[rid] = queue
        if on_end is not None:
            self._stream_ends[rid] = on_end
        finished = False
        try:
            self._writer.writelines(encode({"op": "generate", "id": rid, "request": request}))
            while True:
                frame = await queue.get()
                if not frame.get("ok"):
                    finished = True
                    raise stream_error(frame)
                if frame.get("event") == "done":
                    finished = True
                    yield frame
                    return
                yield frame
        finally:
            self._streams.pop(rid, None)
            if not finished:
                self.cancel(rid)
            self._ended(rid)

    def _ended(self, rid: int) -> None:
        end = self._stream_ends.pop(rid, None)
        if end is not None:
            end()

    def cancel(self, rid: int) -> None:
        """Ask the worker to drop sequence ``rid`` before its next step (no reply awaited)."""
        if self.alive and self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(encode({"op": "cancel", "id": next(self._ids), "target": rid}))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                hlen, plen = PREFIX.unpack(await reader.readexactly(PREFIX.size))
                head = await reader.readexactly(hlen)
                payload = await reader.readexactly(plen) if plen else b""
                header, arrays = decode(head, payload, self._inbox, copy_shared=True)
                stream = self._streams.get(header.get("id", -1))
                if stream is not None:
                    stream.put_nowait(header)
                    if header.get("event") == "done" or not header.get("ok"):
                        self._ended(header["id"])
                    continue
                fut = self._pending.get(header.get("id", -1))
                if fut is not None and not fut.done():
                    fut.set_result((header, arrays))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.exited.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Unavailable("model worker exited", retry_after=1))
            self._pending.clear()
            for stream in self._streams.values():
                stream.put_nowait({"ok": False, "status": 503, "error": "model worker exited"})
            for rid in list(self._stream_ends):
                self._ended(rid)
            if self._writer is not None:
                self._writer.close()
            for arena in (self._outbox, self._inbox):
                if arena is not None:
                    arena.close()
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(self.proc.wait, 5)
            if self.on_exit is not None and not self.stopping:
                self.on_exit(self)

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``grace`` seconds."""
        self.stopping = True
        if self.alive:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call({"op": "stop"}), grace)
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), grace)
            except TimeoutError:
                self.kill()
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader_task, grace)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
