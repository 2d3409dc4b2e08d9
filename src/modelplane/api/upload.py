"""Streaming multipart parser for artifact uploads.

Unlike ``request.form()`` (which spools files to its own temp files), the file
part streams straight into a ``BlobWriter`` that hashes as it writes, in a
worker thread, so a multi-GB artifact is written once and never held in memory.
Form fields other than the file are small and capped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from modelplane.api.limits import NUL_MESSAGE, has_nul
from modelplane.errors import BadRequest, InvalidInput, PayloadTooLarge
from modelplane.settings import Settings
from modelplane.storage.blobs import BlobWriter

_FLUSH_BYTES = 1024 * 1024


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Upload:
    fields: dict[str, str]
    writer: BlobWriter | None
    filename: str


class _Collector:
    def __init__(self, new_writer: Callable[[], BlobWriter], max_field_bytes: int) -> None:
        self.new_writer = new_writer
        self.max_field_bytes = max_field_bytes
        self.fields: dict[str, str] = {}
        self.writer: BlobWriter | None = None
        self.filename = ""
        self.pending = bytearray()  # file bytes not yet handed to the writer
        self.part = _Part()
        self._hname = b""
        self._hvalue = b""
        self.ended = False

    def on_end(self) -> None:
        self.ended = True

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers.append((self._hname.lower(), self._hvalue))
        self._hname = self._hvalue = b""

    def on_headers_finished(self) -> None:
        disposition = dict(self.part.headers).get(b"content-disposition")
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise BadRequest("multipart part without a name in Content-Disposition")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self.writer is not None:
                raise BadRequest("upload one artifact file per request")
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
            self.filename = self.part.filename
            self.writer = self.new_writer()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.filename is not None:
            self.pending += data[start:end]
            return
        self.part.data += data[start:end]
        if len(self.part.data) > self.max_field_bytes:
            raise PayloadTooLarge(
                f"form field {self.part.name!r} exceeds {self.max_field_bytes} bytes"
            )

    def on_part_end(self) -> None:
        if self.part.filename is None:
            if self.part.name in self.fields:
                raise BadRequest(f"form field {self.part.name!r} given twice")
            try:
                self.fields[self.part.name] = self.part.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest(f"form field {self.part.name!r} is not UTF-8") from exc


async def read_upload(
    content_type: str,
    stream: AsyncIterator[bytes],
    new_writer: Callable[[], BlobWriter],
    max_field_bytes: int,
) -> Upload:
    """Parse a multipart body; the caller owns (commits or aborts) ``Upload.writer``."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("upload must be multipart/form-data with a boundary")
    c = _Collector(new_writer, max_field_bytes)
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": c.on_part_begin,
            "on_part_data": c.on_part_data,
            "on_part_end": c.on_part_end,
            "on_header_field": c.on_header_field,
            "on_header_value": c.on_header_value,
            "on_header_end": c.on_header_end,
            "on_headers_finished": c.on_headers_finished,
            "on_end": c.on_end,
        },
    )

    async def flush(force: bool) -> None:
        if c.writer is not None and c.pending and (force or len(c.pending) >= _FLUSH_BYTES):
            chunk = bytes(c.pending)
            c.pending.clear()
            await anyio.to_thread.run_sync(c.writer.write, chunk)

    try:
        async for chunk in stream:
            parser.write(chunk)
            await flush(False)
        parser.finalize()
        if not c.ended:
            raise BadRequest("malformed multipart body: it ends before its closing boundary")
        await flush(True)
    except BaseException as exc:
        if c.writer is not None:
            c.writer.abort()
        if isinstance(exc, FormParserError):
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        raise
    return Upload(c.fields, c.writer, c.filename)


async def receive_upload(
    request: Request, new_writer: Callable[[], BlobWriter], settings: Settings, what: str
) -> tuple[dict[str, str], BlobWriter, str]:
    """The whole multipart upload of one ``file`` part: (other fields, its writer, filename).

    413 when the declared body is already too large, 400 when the client goes away,
    422 when no file part came; the caller owns (commits or aborts) the writer.
    """
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + settings.max_json_bytes:
        raise PayloadTooLarge(f"upload of {declared} bytes exceeds the limit of {limit} bytes")
    try:
        up = await read_upload(
            request.headers.get("content-type", ""),
            request.stream(),
            new_writer,
            settings.max_json_bytes,
        )
    except ClientDisconnect as exc:
        raise BadRequest("client disconnected during the upload") from exc
    if up.writer is None:
        raise InvalidInput(f"no {what}: send the file as a multipart part named 'file'")
    # NUL (raw, or as \u0000 in a JSON field): PostgreSQL text cannot hold it (api.limits)
    if has_nul(up.filename.encode()) or any(has_nul(v.encode()) for v in up.fields.values()):
        up.writer.abort()
        raise BadRequest(NUL_MESSAGE.format(where="upload form"))
    return up.fields, up.writer, up.filename
