"""Blob downloads with Range, the same whether or not the blob is encrypted at rest.

FileResponse needs a plaintext file; an encrypted blob has none, and decrypting
it to disk for every download would leave plaintext behind. So every download
reads through ``BlobStore.open`` (a seekable plaintext view that decrypts only
the segments a range touches) and this module does the HTTP part: one code
path for both kinds of blob. Ranges follow RFC 9110: ``bytes=a-b``, ``a-``,
``-n``, several at once (multipart/byteranges), ``If-Range`` against the
ETag; a malformed or unknown-unit Range is ignored (full body), and one with no
satisfiable part is 416. The first chunk is read before the status line is
sent, so a missing key or a tampered first segment is a clean JSON error.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from typing import BinaryIO
from urllib.parse import quote

import anyio.to_thread
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from modelplane.storage.blobs import BlobStore

CHUNK = 1 << 20
MAX_RANGES = 100
Range = tuple[int, int]  # [start, end)


def blob_response(
    request: Request,
    blobs: BlobStore,
    digest: str,
    *,
    filename: str,
    media_type: str = "application/octet-stream",
    cache_control: str = "private, no-cache",
) -> Response:
    """The blob ``digest`` as a download (200, 206, 304 or 416); ``ETag`` is its sha256.

    Blocking: call from a sync route.
    """
    etag = f'"{digest}"'
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [x.strip() for x in inm.split(",")]):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})
    out = {"ETag": etag, "Cache-Control": cache_control, "accept-ranges": "bytes"}
    out["content-disposition"] = disposition(filename)
    fh = blobs.open(digest)
    try:
        size = fh.seek(0, io.SEEK_END)
        ranges = wanted_ranges(request.headers.get("range"), size)
        if_range = request.headers.get("if-range")
        if ranges is not None and if_range is not None and if_range != out.get("ETag"):
            ranges = None  # the client's copy is stale: send everything
        if ranges == []:
            fh.close()
            return Response(status_code=416, headers={**out, "content-range": f"bytes */{size}"})
        if ranges is None or len(ranges) == 1:
            start, end = ranges[0] if ranges else (0, size)
            first = _first(fh, start, end)
            out["content-length"] = str(end - start)
            status = 200
            if ranges is not None:
                status, out["content-range"] = 206, f"bytes {start}-{end - 1}/{size}"
            body = _stream(fh, [(start, end)], first)
            return StreamingResponse(body, status, headers=out, media_type=media_type)
        return _multipart(fh, ranges, size, media_type, out)
    except BaseException:
        fh.close()
        raise


def wanted_ranges(header: str | None, size: int) -> list[Range] | None:
    """Satisfiable ranges, merged and sorted; None to send the whole body; [] for 416."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        return None
    ranges: list[Range] = []
    for part in parts:
        first, dash, last = part.strip().partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last) or not all(x.isdigit() for x in (first, last) if x):
            return None  # malformed: ignore the whole header
        if not first:
            if int(last) > 0:
                ranges.append((max(size - int(last), 0), size))
            continue
        start, stop = int(first), int(last) + 1 if last else size
        if last and stop <= start:
            return None  # last < first: malformed
        if start < size:
            ranges.append((start, min(stop, size)))
    ranges.sort()
    merged: list[Range] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def _first(fh: BinaryIO, start: int, end: int) -> bytes:
    fh.seek(start)
    return fh.read(min(CHUNK, end - start))


async def _stream(
    fh: BinaryIO, ranges: list[Range], first: bytes = b"", parts: list[bytes] | None = None
) -> AsyncIterator[bytes]:
    """The bytes of ``ranges``; with ``parts``, each preceded by its multipart head."""
    try:
        for i, (start, end) in enumerate(ranges):
            if parts is not None:
                yield parts[i]
            if i == 0 and first:
                yield first
                start += len(first)
            else:
                await anyio.to_thread.run_sync(fh.seek, start)
            while start < end:
                chunk = await anyio.to_thread.run_sync(fh.read, min(CHUNK, end - start))
                if not chunk:
                    raise OSError("blob is shorter than its recorded size")
                start += len(chunk)
                yield chunk
            if parts is not None:
                yield b"\r\n"
        if parts is not None:
            yield parts[-1]
    finally:
        fh.close()


def _multipart(
    fh: BinaryIO, ranges: list[Range], size: int, media_type: str, headers: dict[str, str]
) -> Response:
    boundary = secrets.token_hex(13)
    heads = [
        f"--{boundary}\r\nContent-Type: {media_type}\r\n"
        f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n".encode("latin-1")
        for start, end in ranges
    ]
    parts = [*heads, f"--{boundary}--".encode("latin-1")]
    length = sum(len(p) for p in parts) + sum(end - start + 2 for start, end in ranges)
    first = _first(fh, *ranges[0])
    headers["content-length"] = str(length)
    return StreamingResponse(
        _stream(fh, ranges, first, parts),
        206,
        headers=headers,
        media_type=f"multipart/byteranges; boundary={boundary}",
    )
