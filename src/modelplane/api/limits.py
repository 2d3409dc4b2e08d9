"""Request body limits: a size cap per route (413) and a JSON nesting cap (400).

- Management bodies (``/api/v1/...`` and every other FastAPI route) hold at most
  ``max_json_bytes``; model-version and dataset uploads stream under their own
  caps instead (``api/upload``).
- Inference bodies hold at most ``max_infer_bytes``; the fast path enforces
  that itself and calls ``too_deep`` on what it read.
- NUL characters in management bodies and query strings are refused (400):
  nothing there has a use for one, and PostgreSQL text columns cannot hold it.
  Inference bodies may carry them (bytes tensors as strings).
- JSON nested deeper than ``max_json_depth`` levels is refused before any parser
  sees it: the standard library's parser (FastAPI's) recurses once per level,
  and so do pydantic and the tensor codecs after it, so a small body of ``[``
  costs a deep Python stack, and a deeply nested document is never a real
  tensor, model description or job spec.

``too_deep`` is built for the hot path: C-speed byte operations (translate,
replace, a regex) shrink the body to its brackets; a body with fewer brackets
than the cap is done after one pass, rows of numbers vanish in a few more;
only deeper ones go to a numpy running sum.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.auth.roles import OPENAI_INFER, is_inference

Result = tuple[int, list[tuple[bytes, bytes]], bytes]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# No name, description, tag or filter has a use for NUL, and PostgreSQL text cannot hold one.
NUL_MESSAGE = "the {where} contains a NUL character (\\u0000 or %00), which is not accepted"

_DROP = bytes(b for b in range(256) if b not in b'[]{}"')  # keep brackets and quotes
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string is quote to quote
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_PASSES = 4  # empty-pair removals that prove most bodies shallow without the running sum


def too_deep(doc: bytes, limit: int) -> bool:
    """Is ``doc`` (JSON) nested more than ``limit`` levels deep? Exact for valid JSON."""
    if len(doc) <= limit:
        return False
    marks = doc.translate(None, _DROP)
    if len(marks) - marks.count(b'"') <= limit:  # too few brackets to nest that deep
        return False
    if b"\\" in doc:  # drop escaped backslashes, then escaped quotes, before the strings
        marks = doc.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DROP)
    if b'"' in marks:
        marks = _STRING.sub(b"", marks)  # brackets inside strings do not nest
    if len(marks) <= limit:  # also: none left
        return False
    if limit >= 2 * _PASSES:
        left = marks
        for _ in range(_PASSES):
            # drops the empty containers, then those emptied by that: 1 or 2 levels a pass
            left = left.replace(b"[]", b"").replace(b"{}", b"")
            if not left:
                return False  # depth <= 2 * _PASSES <= limit
    depth = np.cumsum(_STEP[np.frombuffer(marks, np.uint8)], dtype=np.int32)
    return bool(depth.max() > limit)


def has_nul(doc: bytes) -> bool:
    """Does JSON ``doc`` hold a NUL character (a raw byte, or an unescaped ``\\u0000``)?"""
    if b"\x00" in doc:
        return True
    at = doc.find(b"\\u0000")
    while at != -1:
        start = at
        while start > 0 and doc[start - 1] == 0x5C:  # backslashes before this one
            start -= 1
        if (at - start) % 2 == 0:  # this backslash is not itself escaped: a real \u0000
            return True
        at = doc.find(b"\\u0000", at + 1)
    return False


def json_part(body: bytes, headers: dict[bytes, bytes]) -> bytes:
    """The JSON of a body; with OIP's binary extension only the header part is JSON."""
    declared = headers.get(b"inference-header-content-length")
    if declared is not None and declared.isdigit():
        return body[: int(declared)]
    return body


def depth_message(limit: int) -> str:
    return f"request body is nested deeper than {limit} levels (JSON arrays and objects)"


def size_message(limit: int) -> str:
    return f"request body exceeds {limit} bytes"


def refusal(path: str, status: int, message: str) -> Result:
    """An error in the route's protocol shape: OpenAI's on its routes, ``{"error"}`` else
    (TF Serving's messages name the kind of failure first)."""
    if status == 400 and path.startswith("/v1/models/"):
        message = f"JSON Parse error: {message}"
    doc: dict[str, Any]
    if path.rstrip("/") in OPENAI_INFER:
        kind = "invalid_request_error"
        doc = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        doc = {"error": message}
    body = orjson.dumps(doc)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return status, headers, body


async def send_result(send: Send, result: Result) -> None:
    status, headers, body = result
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def is_upload(method: str, path: str) -> bool:
    """Model-version and dataset uploads: multipart, capped by ``api/upload``."""
    if method != "POST":
        return False
    if path.rstrip("/") == "/api/v1/datasets":
        return True
    parts = path.split("/")  # ["", "api", "v1", "models", m, "versions"]
    return len(parts) == 6 and parts[3] == "models" and parts[5] == "versions"


class BodyTooLarge(Exception):
    """The request body was declared or streamed past its cap."""


class ClientGone(Exception):
    """The client disconnected before its body was in."""


class BodyLimits:
    """Raw ASGI in front of the FastAPI app: reads a body under its route's cap, checks
    its depth, and hands it on; the app then reads it as if from the client."""

    def __init__(
        self, app: ASGIApp, max_json_bytes: int, max_infer_bytes: int, max_depth: int
    ) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_infer_bytes = max_infer_bytes
        self.max_depth = max_depth

    @property
    def state(self) -> object:
        return getattr(self.app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if b"%00" in scope.get("query_string", b""):
            await send_result(send, refusal(path, 400, NUL_MESSAGE.format(where="query string")))
            return
        if method not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if is_upload(method, path):
            await self.app(scope, receive, send)
            return
        limit = self.max_infer_bytes if is_inference(path) else self.max_json_bytes
        headers = dict(scope["headers"])
        try:
            body = await read_body(receive, headers.get(b"content-length"), limit)
        except BodyTooLarge:
            await send_result(send, refusal(path, 413, size_message(limit)))
            return
        except ClientGone:
            return
        doc = json_part(body, headers)
        if self.max_depth and too_deep(doc, self.max_depth):
            await send_result(send, refusal(path, 400, depth_message(self.max_depth)))
            return
        if has_nul(doc):
            await send_result(send, refusal(path, 400, NUL_MESSAGE.format(where="request body")))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, for routes that watch it
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The whole request body (``declared``: its Content-Length header, if any).

    Raises ``BodyTooLarge`` once it is declared or grows past ``limit`` and
    ``ClientGone`` if the client disconnects first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
