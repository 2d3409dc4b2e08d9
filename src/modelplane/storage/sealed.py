"""The encrypted blob format: AES-256-GCM in independently authenticated segments.

Layout (all integers big-endian)::

    header  magic "MPBE" | version 1 (1 B) | key id (8 B) | segment size S (4 B)
            | salt (16 B) | nonce prefix (7 B)                       = 40 bytes
    body    segment 0 … segment n-1, each AES-GCM(ciphertext ‖ 16-byte tag)

Every segment but the last holds exactly S plaintext bytes; the last holds
0..S (an empty blob is one empty final segment). This is the STREAM
construction (as in Tink's AES-GCM-HKDF streaming AEAD):

- each blob gets its own key, HKDF-SHA256(master key, salt) with a random
  salt, so nonces never need to be unique across blobs;
- the segment nonce is prefix (7 B) ‖ segment index (4 B) ‖ last flag (1 B):
  reordering, dropping or duplicating segments fails authentication, and so
  does cutting the blob at a segment boundary (the new last segment was not
  sealed as last);
- every segment authenticates the header and the blob's digest (sha256 of the
  plaintext, its name in the store) as associated data, so swapping two blob
  files or editing the header is detected too.

Segments decrypt independently, so a Range read touches only the segments it
needs, and sealing streams in constant memory.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelplane.errors import ModelplaneError
from modelplane.storage.keys import KEY_ID_BYTES, Keyring

MAGIC = b"MPBE"
VERSION = 1
TAG = 16
SEGMENT = 1 << 20
_HEADER = struct.Struct(f">4sB{KEY_ID_BYTES}sI16s7s")
HEADER_SIZE = _HEADER.size
_INFO = b"modelplane blob v1"


class BlobKeyError(ModelplaneError, OSError):
    """An encrypted blob whose key is not configured (wrong or missing key).

    Also an OSError: to callers it is a blob that cannot be read, like a missing
    or unreadable file (a deployment that hits it fails with this message).
    """


class BlobIntegrityError(ModelplaneError, OSError):
    """An encrypted blob that fails authentication: tampered, truncated or corrupt."""


@dataclass(frozen=True)
class Header:
    key_id: bytes
    segment: int
    salt: bytes
    prefix: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.key_id, self.segment, self.salt, self.prefix)

    @classmethod
    def unpack(cls, raw: bytes, what: str) -> Header:
        if len(raw) < HEADER_SIZE:
            raise BlobIntegrityError(f"{what} is truncated: no complete encryption header")
        magic, version, kid, segment, salt, prefix = _HEADER.unpack(raw[:HEADER_SIZE])
        if magic != MAGIC:
            raise BlobIntegrityError(f"{what} is not an encrypted modelplane blob (bad magic)")
        if version != VERSION or not 0 < segment <= 1 << 30:
            raise BlobIntegrityError(f"{what} has an unsupported header (version {version})")
        return cls(kid, segment, salt, prefix)


def key_id_of(path: Path) -> bytes:
    """The key id a sealed blob file names in its header."""
    with open(path, "rb") as fh:
        return Header.unpack(fh.read(HEADER_SIZE), path.name).key_id


def _segment_key(key: bytes, salt: bytes) -> AESGCM:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return AESGCM(kdf.derive(key))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise ValueError("blob too large for the segment counter")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def seal(src: BinaryIO, dst: BinaryIO, keys: Keyring, digest: str, segment: int = SEGMENT) -> int:
    """Encrypt ``src`` (to its end) into ``dst`` with the primary key; returns bytes written."""
    header = Header(keys.primary_id, segment, os.urandom(16), os.urandom(7))
    head = header.pack()
    aad = head + bytes.fromhex(digest)
    aead = _segment_key(keys.primary, header.salt)
    dst.write(head)
    written = len(head)
    chunk = _read_full(src, segment)
    index = 0
    while True:
        following = _read_full(src, segment) if len(chunk) == segment else b""
        last = not following
        sealed = aead.encrypt(_nonce(header.prefix, index, last), chunk, aad)
        dst.write(sealed)
        written += len(sealed)
        if last:
            return written
        chunk, index = following, index + 1


def _read_full(src: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    want = n
    while want:
        data = src.read(want)
        if not data:
            break
        parts.append(data)
        want -= len(data)
    return b"".join(parts)


def plaintext_size(body: int, segment: int, what: str) -> tuple[int, int]:
    """(plaintext bytes, segment count) for a body of ``body`` ciphertext bytes."""
    if body < TAG:
        raise BlobIntegrityError(f"{what} is truncated")
    count = -(-body // (segment + TAG))
    last = body - (count - 1) * (segment + TAG)
    if last < TAG:
        raise BlobIntegrityError(f"{what} is truncated")
    return body - count * TAG, count


class SealedReader(io.RawIOBase):
    """A seekable, read-only view of a sealed blob's plaintext; decrypts segments on demand."""

    def __init__(self, fh: BinaryIO, keys: Keyring | None, digest: str) -> None:
        super().__init__()
        self._fh = fh
        what = f"blob {digest[:12]}…"
        try:
            header = Header.unpack(fh.read(HEADER_SIZE), what)
            key = keys.find(header.key_id) if keys is not None else None
            if key is None:
                configured = ", ".join(keys.ids()) if keys is not None else "none"
                raise BlobKeyError(
                    f"{what} is encrypted with key id {header.key_id.hex()}, which is not among "
                    f"the configured keys ({configured}); set MODELPLANE_ENCRYPTION_KEY to a "
                    "list that includes it"
                )
            body = os.fstat(fh.fileno()).st_size - HEADER_SIZE
            self.size, self._count = plaintext_size(body, header.segment, what)
        except BaseException:
            fh.close()
            raise
        self._what = what
        self._header = header
        self._aad = header.pack() + bytes.fromhex(digest)
        self._aead = _segment_key(key, header.salt)
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def segment(self, index: int) -> bytes:
        """Plaintext of segment ``index`` (authenticated)."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        s = self._header.segment
        self._fh.seek(HEADER_SIZE + index * (s + TAG))
        sealed = self._fh.read(s + TAG)
        last = index == self._count - 1
        try:
            plain = self._aead.decrypt(_nonce(self._header.prefix, index, last), sealed, self._aad)
        except InvalidTag:
            raise BlobIntegrityError(
                f"{self._what} failed authentication at segment {index}: the stored bytes were "
                "altered, truncated or belong to another blob"
            ) from None
        self._cached = (index, plain)
        return plain

    def verify(self) -> None:
        """Authenticate every segment (backups and rekeying check whole blobs)."""
        for index in range(self._count):
            self.segment(index)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes [start, end), one segment's worth at a time."""
        s = self._header.segment
        while start < end:
            index, offset = divmod(start, s)
            data = self.segment(index)[offset : offset + end - start]
            if not data:
                raise BlobIntegrityError(f"{self._what} is shorter than its header says")
            start += len(data)
            yield data

    # -- io.RawIOBase ------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            return 0
        data = next(self.chunks(self._pos, self._pos + want))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._cached = None
        super().close()
