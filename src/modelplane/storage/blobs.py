"""Content-addressed blob store on a local folder.

Layout: ``blobs/sha256/ab/abcdef…`` for committed blobs and ``tmp/`` for writes
in progress. A write streams into ``tmp/``, is fsynced, then renamed into
place (atomic on POSIX) and the directory is fsynced, so a blob is either
absent or whole. ``tmp/`` is emptied at start: a server killed mid-upload
leaves nothing visible behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from modelplane.errors import NotFound, PayloadTooLarge

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobWriter:
    """Streams bytes into a temp file while hashing; ``commit`` makes the blob visible."""

    def __init__(self, store: BlobStore, limit: int) -> None:
        self._store = store
        self._limit = limit
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            self.abort()
            raise PayloadTooLarge(f"artifact exceeds the upload limit of {self._limit} bytes")
        self._hash.update(data)
        self._file.write(data)

    @property
    def temp_path(self) -> Path:
        """The data written so far (for inspection before commit)."""
        self._file.flush()
        return self._path

    def commit(self) -> str:
        """fsync, rename into place (deduplicating), return the sha256 hex digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self._hash.hexdigest()
        self._store.adopt(self._path, digest)
        self._done = True
        return digest

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        self._path.unlink(missing_ok=True)


class BlobStore:
    """Local-folder blob store. Thread-safe: every write has its own temp file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.tmp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def clean_tmp(self, min_age_seconds: float = 0.0) -> int:
        """Remove leftovers of interrupted writes; call at start, before serving.

        ``min_age_seconds`` spares files another live server process is still writing.
        """
        removed = 0
        cutoff = time.time() - min_age_seconds
        for entry in self.tmp_dir.iterdir():
            if entry.stat().st_mtime > cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def writer(self, limit: int) -> BlobWriter:
        return BlobWriter(self, limit)

    def put_bytes(self, data: bytes) -> str:
        w = self.writer(len(data) + 1)
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def path(self, digest: str) -> Path:
        if not _SHA256.fullmatch(digest):
            raise NotFound(f"no blob {digest!r}")
        return self.blob_dir / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open_path(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            raise NotFound(f"artifact blob {digest} is missing from the store")
        return p

    def adopt(self, temp: Path, digest: str) -> None:
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            # Same content is already durable: drop ours, but refresh the mtime so a
            # concurrent garbage collection (which honours a grace period) keeps it.
            temp.unlink(missing_ok=True)
            os.utime(target)
            return
        os.replace(temp, target)
        _fsync_dir(target.parent)

    def collect(self, referenced: Iterable[str], grace_seconds: float) -> list[str]:
        """Delete blobs not in ``referenced`` and untouched for ``grace_seconds``."""
        keep = set(referenced)
        cutoff = time.time() - grace_seconds
        removed: list[str] = []
        for sub in self.blob_dir.iterdir():
            for blob in sub.iterdir():
                if blob.name in keep:
                    continue
                try:
                    if blob.stat().st_mtime <= cutoff:
                        blob.unlink()
                        removed.append(blob.name)
                except FileNotFoundError:
                    continue
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
