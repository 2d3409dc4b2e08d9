"""Content-addressed blob store on a local folder, optionally encrypted at rest.

Layout: ``blobs/sha256/ab/abcdef…`` for committed blobs and ``tmp/`` for writes
in progress. A write streams into ``tmp/``, is fsynced, then renamed into
place (atomic on POSIX) and the directory is fsynced, so a blob is either
absent or whole. ``tmp/`` is emptied at start: a server killed mid-upload
leaves nothing visible behind.

With a keyring, committed blobs are sealed (``storage.sealed``) and stored as
``abcdef….enc``; the name stays the sha256 of the plaintext, so deduplication
and ETags do not change. Plaintext blobs written before encryption was turned
on stay readable (``rekey`` seals them). Upload temp files hold plaintext while
the upload is inspected, then are sealed at commit and deleted.

Readers: ``open`` gives a seekable file of the plaintext (segments decrypted on
demand, nothing written to disk); ``open_path`` gives a plaintext file path for
libraries that need one, decrypting once into ``plain_dir`` (0700) for sealed
blobs. That cache holds at most ``plain_cap`` bytes (``blob_cache_bytes``):
after each new entry the least recently used ones go, except those handed out
within the last ``plain_in_use_seconds`` (their reader may not have opened them
yet; one already open keeps reading after the unlink). Recency is the file's
mtime, refreshed on each hit, so every process sharing the cache agrees on it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.errors import NotFound, PayloadTooLarge
from modelplane.storage.keys import KeyConfigError, Keyring, resolve_keys
from modelplane.storage.sealed import SEGMENT, SealedReader, key_id_of, seal

if TYPE_CHECKING:
    from modelplane.settings import Settings

_SHA256 = re.compile(r"[0-9a-f]{64}")
SEALED_SUFFIX = ".enc"


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
        try:
            self._store.adopt(self._path, digest)
        finally:
            self._path.unlink(missing_ok=True)  # sealing leaves the plaintext temp behind
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

    def __init__(
        self,
        root: Path,
        keys: Keyring | None = None,
        plain_dir: Path | None = None,
        segment: int = SEGMENT,
        plain_cap: int = 0,
        plain_in_use_seconds: float = 300.0,
    ) -> None:
        self.root = root
        self.keys = keys
        self.segment = segment
        self.plain_cap = plain_cap  # bytes of decrypted copies kept; 0: no cap
        self.plain_in_use_seconds = plain_in_use_seconds
        self.blob_dir = root / "blobs" / "sha256"
        self.tmp_dir = root / "tmp"
        self.plain_dir = plain_dir if plain_dir is not None else root / "plain"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        private_dir(self.tmp_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        """The store ``settings`` describe, keys included; the plaintext cache under data_dir."""
        key, keys = settings.encryption_key, settings.encryption_keys
        ring = Keyring.of(
            resolve_keys(
                key.get_secret_value() if key else None, keys.get_secret_value() if keys else None
            )
        )
        plain = settings.data_dir.resolve() / "cache" / "blobs"
        return cls(settings.resolved_store_path(), ring, plain, plain_cap=settings.blob_cache_bytes)

    def clean_tmp(self, min_age_seconds: float = 0.0) -> int:
        """Remove leftovers of interrupted writes; call at start, before serving.

        ``min_age_seconds`` spares files another live server process is still writing.
        """
        removed = 0
        cutoff = time.time() - min_age_seconds
        half_decrypted = self.plain_dir.glob(".tmp-*") if self.plain_dir.is_dir() else []
        for entry in [*self.tmp_dir.iterdir(), *half_decrypted]:
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

    # -- where a blob lives ------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Where the plaintext form of ``digest`` is (or would be) stored."""
        if not _SHA256.fullmatch(digest):
            raise NotFound(f"no blob {digest!r}")
        return self.blob_dir / digest[:2] / digest

    def sealed_path(self, digest: str) -> Path:
        p = self.path(digest)
        return p.with_name(p.name + SEALED_SUFFIX)

    def stored(self, digest: str) -> Path | None:
        """The file holding ``digest`` (sealed form first), or None."""
        for p in (self.sealed_path(digest), self.path(digest)):
            if p.is_file():
                return p
        return None

    def exists(self, digest: str) -> bool:
        return self.stored(digest) is not None

    def is_sealed(self, digest: str) -> bool:
        return self._stored(digest).name.endswith(SEALED_SUFFIX)

    def _stored(self, digest: str) -> Path:
        p = self.stored(digest)
        if p is None:
            raise NotFound(f"artifact blob {digest} is missing from the store")
        return p

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """(digest, stored file) for every committed blob."""
        for sub in sorted(self.blob_dir.iterdir()):
            for blob in sorted(sub.iterdir()):
                digest = blob.name.removesuffix(SEALED_SUFFIX)
                if _SHA256.fullmatch(digest):
                    yield digest, blob

    # -- reading ---------------------------------------------------------------
    def open(self, digest: str) -> io.BufferedReader:
        """The plaintext as a seekable binary file; sealed blobs decrypt segment by segment.

        Raises ``BlobKeyError`` (key not configured) or ``BlobIntegrityError`` (tampered)
        from storage.sealed, here or while reading.
        """
        p = self._stored(digest)
        fh = open(p, "rb")  # noqa: SIM115 - handed to the caller
        if not p.name.endswith(SEALED_SUFFIX):
            return fh
        return io.BufferedReader(SealedReader(fh, self.keys, digest), buffer_size=self.segment)

    def size(self, digest: str) -> int:
        """Plaintext size in bytes."""
        with self.open(digest) as fh:
            return fh.seek(0, io.SEEK_END)

    def open_path(self, digest: str) -> Path:
        """A plaintext file of the blob, for libraries that take paths.

        Sealed blobs are decrypted (and fully authenticated) once into ``plain_dir``,
        a 0700 cache the materialized artifacts share; ``collect`` removes entries
        whose blob it removes.
        """
        p = self._stored(digest)
        if not p.name.endswith(SEALED_SUFFIX):
            return p
        plain = self.plain_dir / digest
        try:
            os.utime(plain)  # a hit: most recently used now
            return plain
        except FileNotFoundError:
            pass
        private_dir(self.plain_dir)
        fd, name = tempfile.mkstemp(dir=self.plain_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                shutil.copyfileobj(src, out, self.segment)
            os.replace(name, plain)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        self.trim_plain(keep=digest)
        return plain

    def trim_plain(self, keep: str = "") -> list[str]:
        """Evict least recently used decrypted copies until the cache fits ``plain_cap``;
        returns the digests evicted. ``keep`` (just decrypted) and entries used within
        ``plain_in_use_seconds`` stay, even if the cache is then still over its cap."""
        if not self.plain_cap or not self.plain_dir.is_dir():
            return []
        entries: list[tuple[float, str, int]] = []
        total = 0
        with os.scandir(self.plain_dir) as it:
            for entry in it:
                if entry.name.startswith(".tmp-") or not _SHA256.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
                total += st.st_size
                entries.append((st.st_mtime, entry.name, st.st_size))
        evicted: list[str] = []
        cutoff = time.time() - self.plain_in_use_seconds
        for mtime, name, size in sorted(entries):
            if total <= self.plain_cap:
                break
            if name == keep or mtime > cutoff:
                continue
            (self.plain_dir / name).unlink(missing_ok=True)
            total -= size
            evicted.append(name)
        return evicted

    # -- writing ---------------------------------------------------------------
    def adopt(self, temp: Path, digest: str) -> None:
        """Make ``temp`` (plaintext, already fsynced) the blob ``digest``; seals it with keys."""
        existing = self.stored(digest)
        if existing is not None:
            # Same content is already durable: drop ours, but refresh the mtime so a
            # concurrent garbage collection (which honours a grace period) keeps it.
            temp.unlink(missing_ok=True)
            os.utime(existing)
            return
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        if self.keys is None:
            os.replace(temp, target)
        else:
            self._seal_into_place(temp, digest)
            temp.unlink(missing_ok=True)
        fsync_dir(target.parent)

    def _seal_into_place(self, plain: Path, digest: str) -> None:
        assert self.keys is not None
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="seal-")
        try:
            with os.fdopen(fd, "wb") as out, open(plain, "rb") as src:
                seal(src, out, self.keys, digest, self.segment)
                out.flush()
                os.fsync(out.fileno())
            os.replace(name, self.sealed_path(digest))
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def rekey(self) -> int:
        """Seal every blob not sealed with the primary key (plaintext ones included).

        Run after putting a new key first: afterwards the old keys can be dropped.
        Returns how many blobs were rewritten. Safe while a server runs: each blob
        is replaced atomically and stays readable throughout.
        """
        if self.keys is None:
            raise KeyConfigError("no encryption key is configured; nothing to rekey with")
        done = 0
        for digest, stored in list(self.iter_blobs()):
            if stored.name.endswith(SEALED_SUFFIX) and key_id_of(stored) == self.keys.primary_id:
                continue
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="rekey-")
            try:
                with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                    shutil.copyfileobj(src, out, self.segment)  # authenticates every segment
                self._seal_into_place(Path(name), digest)
            finally:
                Path(name).unlink(missing_ok=True)
            if not stored.name.endswith(SEALED_SUFFIX):
                stored.unlink(missing_ok=True)
            fsync_dir(stored.parent)
            done += 1
        return done

    def collect(self, referenced: Iterable[str], grace_seconds: float) -> list[str]:
        """Delete blobs not in ``referenced`` and untouched for ``grace_seconds``."""
        keep = set(referenced)
        cutoff = time.time() - grace_seconds
        removed: list[str] = []
        for digest, blob in list(self.iter_blobs()):
            if digest in keep:
                continue
            try:
                if blob.stat().st_mtime <= cutoff:
                    blob.unlink()
                    (self.plain_dir / digest).unlink(missing_ok=True)
                    if digest not in removed:  # a plaintext and a sealed copy (mid-rekey)
                        removed.append(digest)
            except FileNotFoundError:
                continue
        return removed


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: it may hold plaintext."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
