"""Timeouts for slow clients (slowloris): uvicorn's HTTP protocol with two timers.

uvicorn times out only an idle keep-alive connection; a client that opens a
connection and trickles its request headers a byte at a time, or stops halfway
through its body, holds a connection (and, for a body, a request task) for as
long as it likes. Enough such clients use up the server's file descriptors and
memory while costing the attacker nothing.

- header timer: a request's headers must be complete within
  ``header_timeout`` of the connection opening (or of the first byte of the
  next request on a kept-alive connection). A connection that never sent a
  byte is closed; one halfway through its headers gets a 408 first.
- body timer: while a request body is arriving, each silence may last at most
  ``body_timeout``. Then the client gets a 408 (if no response has started),
  the connection closes, and the route sees a disconnect. Silence the server
  causes (reading paused because the app is busy, or a client waiting for
  ``100 Continue``) does not count.

- header size: the request line and headers together hold at most
  ``MAX_HEADER_BYTES`` (httptools itself sets no bound, so within the header
  timeout a fast client could send gigabytes of them): 431, then close.

``protocol_class(header_timeout, body_timeout)`` is passed as ``http=`` to
uvicorn (``modelplane serve``).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
LINGER_SECONDS = 1.0


def _final_response(status: bytes, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    head = (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, len(body))
    )
    return head + body


def _timeout_response(message: str) -> bytes:
    return _final_response(b"408 Request Timeout", message)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    body_timeout = 30.0

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _request_begun = False
    _header_bytes = 0
    _refused = False  # answered 431: the rest of what this client sends is ignored

    # -- headers -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._header_bytes = 0
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES and not self._refused:
            self._refused = True
            self._cancel_header_timer()
            message = f"request line and headers exceed {MAX_HEADER_BYTES} bytes"
            self.transport.write(_final_response(b"431 Request Header Fields Too Large", message))
            # A lingering close: what the client is still sending is read and dropped for a
            # moment, so the close is a FIN it can read the answer before, not a reset.
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        if self._refused:  # the parser goes on with the bytes it was fed: start no request
            return
        self._request_begun = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._arm_body_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._request_begun:  # halfway through a request: say why it ends
            message = f"request headers not received within {self.header_timeout:g} s"
            self.transport.write(_timeout_response(message))
        self.transport.close()

    # -- body --------------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        super().on_body(body)
        if self._body_timer is not None:
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        if not self._refused:
            super().on_message_complete()

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:  # our silence, not theirs
            self._arm_body_timer()
            return
        if not cycle.response_started and not cycle.response_complete:
            message = f"request body stalled for more than {self.body_timeout:g} s"
            self.transport.write(_timeout_response(message))
        cycle.disconnected = True  # the route's receive() now answers http.disconnect
        cycle.message_event.set()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)


def protocol_class(header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these timeouts (for ``uvicorn.Config(http=...)``)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
