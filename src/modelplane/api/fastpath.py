"""Raw ASGI fast path for inference calls; everything else goes to the FastAPI app.

Inference is the hot path: routing, dependency injection and validation by
FastAPI cost more than the model for small tensors. Here a POST to an infer
route is matched with string operations, its body read with a size cap, and
handed to the protocol module's ``infer``; a client that disconnects while its
request waits has it cancelled, so queued work for it is skipped.

A handler may answer ``Streamed`` instead: its chunks go out as they are made
(``more_body``), and a client that disconnects mid-stream closes the chunk
iterator, which stops the work behind it (text generation cancels the sequence).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from modelplane.api.instrument import Instrument
from modelplane.api.limits import (
    BodyTooLarge,
    ClientGone,
    depth_message,
    json_part,
    read_body,
    refusal,
    send_result,
    size_message,
    too_deep,
)
from modelplane.monitoring.ticket import TICKET, Ticket
from modelplane.registry.tables import DEFAULT_TENANT

Headers = dict[bytes, bytes]
Result = tuple[int, list[tuple[bytes, bytes]], bytes]


class Chunks(Protocol):
    """Body chunks of a streamed response; ``aclose`` stops the work behind them."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Streamed:
    """A response sent as it is made: each chunk of ``chunks`` goes out at once."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: Chunks


Handler = Callable[[Headers, bytes, str], Awaitable[Result | Streamed]]
T = TypeVar("T")
# A protocol module offers a matcher: (method, path) -> handler for that call, or None.
Matcher = Callable[[str, str], Handler | None]


class FastPath:
    max_depth = 0  # deepest JSON nesting accepted (``api.limits``; 0: any); set by the app

    def __init__(
        self, app: ASGIApp, matchers: list[Matcher], max_body: int,
        instrument: Instrument | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.matchers = matchers
        self.max_body = max_body
        self.instrument = instrument  # request metrics and usage metering; None: off

    @property
    def state(self) -> Any:
        """The FastAPI app's state (settings, registry, manager, …)."""
        return getattr(self.app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for match in self.matchers:
                handler = match(scope["method"], scope["path"])
                if handler is not None:
                    if self.instrument is None:
                        await self._serve(scope, receive, send, handler)
                    else:
                        await self.instrument.inference(self._serve, scope, receive, send, handler)
                    return
        if self.instrument is None:
            await self.app(scope, receive, send)
        else:
            await self.instrument.management(self.app, scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, handler: Handler) -> None:
        ticket = TICKET.get()  # metrics on: status and bytes are recorded on it
        headers: Headers = dict(scope["headers"])
        try:
            body = await read_body(receive, headers.get(b"content-length"), self.max_body)
        except BodyTooLarge:
            refused = refusal(scope["path"], 413, size_message(self.max_body))
            await send_result(send, _noted(ticket, refused))
            return
        except ClientGone:
            return
        if ticket is not None:
            ticket.bytes_in = len(body)
        if self.max_depth and too_deep(json_part(body, headers), self.max_depth):
            refused = refusal(scope["path"], 400, depth_message(self.max_depth))
            await send_result(send, _noted(ticket, refused))
            return
        tenant = scope.get("state", {}).get("tenant", DEFAULT_TENANT)
        result = await _unless_disconnected(handler(headers, body, tenant), receive)
        if result is None:
            return
        if isinstance(result, Streamed):
            await _stream(result, receive, send, ticket)
            return
        status, out_headers, out = _noted(ticket, result)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*out_headers, (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})


def _noted(ticket: Ticket | None, result: Result) -> Result:
    if ticket is not None:
        ticket.status, ticket.bytes_out = result[0], len(result[2])
    return result


async def _stream(result: Streamed, receive: Receive, send: Send, ticket: Ticket | None) -> None:
    chunks = result.chunks

    async def pump() -> None:
        start = {"type": "http.response.start", "status": result.status}
        await send({**start, "headers": result.headers})
        if ticket is not None:
            ticket.status = result.status
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if ticket is not None:
                ticket.bytes_out += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    try:
        await _unless_disconnected(pump(), receive)
    finally:
        await chunks.aclose()  # also when the client left: its cleanup cancels the work


async def _unless_disconnected(work: Awaitable[T], receive: Receive) -> T | None:
    """Run ``work``; cancel it if the client disconnects first (its queued item is skipped)."""
    task = asyncio.current_task()
    gone = False

    async def watch() -> None:
        nonlocal gone
        message = await receive()
        if message["type"] == "http.disconnect" and task is not None:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task is not None:
            task.uncancel()
            return None
        raise
    finally:
        watcher.cancel()  # not awaited: the response goes out without another loop turn
