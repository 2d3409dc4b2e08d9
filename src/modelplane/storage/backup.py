"""The backup file: a database snapshot, every blob as stored, a manifest with checksums.

One tar (gzip when the name ends in .gz or .tgz)::

    database/modelplane.db | database/rows.jsonl     the snapshot (db.snapshot)
    blobs/sha256/ab/abcdef…[.enc]                     each blob exactly as on disk
    manifest.json                                     last: versions, sizes, sha256s

Encrypted blobs travel sealed (the backup holds no key and no plaintext of
them); restoring needs the same keys. The manifest comes last so a backup is
written in one pass; it is written to a temp file, fsynced and renamed, so a
backup file is either complete or absent. Reading checks every member's name,
size and sha256 against the manifest (and a plaintext blob against its own
name) before anything is installed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from modelplane import __version__
from modelplane.errors import InvalidInput
from modelplane.storage.blobs import SEALED_SUFFIX, BlobStore, fsync_dir
from modelplane.storage.sealed import key_id_of

FORMAT = "modelplane-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_DATABASE = re.compile(r"database/(modelplane\.db|rows\.jsonl)")
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{2})/(\1[0-9a-f]{62})(\.enc)?")


class BackupError(InvalidInput):
    """A backup file that is damaged, incomplete or not a modelplane backup."""


class _Hashing:
    """A file wrapper that hashes what tarfile reads through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        info = tarfile.TarInfo(name)
        info.size = os.fstat(fh.fileno()).st_size  # of the file we hold open
        info.mtime = int(os.fstat(fh.fileno()).st_mtime)
        info.mode = 0o600
        reader = _Hashing(fh)
        tar.addfile(info, reader)
    return {"path": name, "size": info.size, "sha256": reader.sha.hexdigest()}


def write_backup(
    dest: Path, database: Path, db_info: dict[str, Any], blobs: BlobStore
) -> dict[str, Any]:
    """Write the backup file atomically; returns its manifest."""
    dest = dest.resolve()
    gz = dest.name.endswith((".gz", ".tgz"))
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz" if gz else "w") as tar:
                manifest = _write_members(tar, database, db_info, blobs)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest


def _write_members(
    tar: tarfile.TarFile, database: Path, db_info: dict[str, Any], blobs: BlobStore
) -> dict[str, Any]:
    db_entry = _add(tar, f"database/{database.name}", database)
    entries = []
    for digest, stored in blobs.iter_blobs():
        entry = _add(tar, f"blobs/sha256/{digest[:2]}/{stored.name}", stored)
        sealed = stored.name.endswith(SEALED_SUFFIX)
        entry.update(digest=digest, sealed=sealed, key_id=None)
        if sealed:
            entry["key_id"] = key_id_of(stored).hex()
        entries.append(entry)
    now = datetime.now(UTC)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modelplane_version": __version__,
        "created_at": now.isoformat(),
        "database": {**db_info, **db_entry},
        "blobs": entries,
        "key_ids": sorted({e["key_id"] for e in entries if e["key_id"]}),
    }
    body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    info = tarfile.TarInfo(MANIFEST)
    info.size, info.mtime, info.mode = len(body), int(now.timestamp()), 0o600
    tar.addfile(info, io.BytesIO(body))
    return manifest


def read_backup(src: Path, staging: Path) -> dict[str, Any]:
    """Unpack ``src`` into ``staging`` and verify it against its manifest; returns the manifest."""
    seen: dict[str, tuple[int, str]] = {}
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(src, "r:*") as tar:
            for member in tar:
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    raise BackupError(f"backup member {member.name!r} is not a regular file")
                if member.name == MANIFEST:
                    manifest = orjson.loads(fh.read(16 * 1024**2))
                    continue
                if not (_DATABASE.fullmatch(member.name) or _BLOB.fullmatch(member.name)):
                    raise BackupError(f"unexpected member {member.name!r} in the backup")
                target = staging / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                sha = hashlib.sha256()
                with open(target, "wb") as out:
                    while chunk := fh.read(1 << 20):
                        sha.update(chunk)
                        out.write(chunk)
                seen[member.name] = (member.size, sha.hexdigest())
    except (tarfile.TarError, EOFError, OSError, orjson.JSONDecodeError) as exc:
        raise BackupError(f"{src} is not a readable backup: {exc}") from exc
    if manifest is None or manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is not a modelplane backup (no manifest; truncated?)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format {manifest.get('format_version')} is not supported")
    _verify(manifest, seen)
    return manifest


def _verify(manifest: dict[str, Any], seen: dict[str, tuple[int, str]]) -> None:
    expected = [manifest["database"], *manifest["blobs"]]
    for entry in expected:
        got = seen.pop(entry["path"], None)
        if got is None:
            raise BackupError(f"backup is missing {entry['path']}")
        if got != (entry["size"], entry["sha256"]):
            raise BackupError(f"checksum mismatch for {entry['path']}: the backup is damaged")
        if "digest" in entry and not entry["sealed"] and entry["sha256"] != entry["digest"]:
            raise BackupError(f"blob {entry['path']} does not hash to its name")
    if seen:
        raise BackupError(f"backup has members its manifest does not list: {sorted(seen)[:5]}")


def install_blobs(staging: Path, blobs: BlobStore) -> int:
    """Move verified blobs from ``staging/blobs`` into the store; returns how many."""
    count = 0
    source = staging / "blobs" / "sha256"
    if not source.is_dir():
        return 0
    for sub in sorted(source.iterdir()):
        target_dir = blobs.blob_dir / sub.name
        target_dir.mkdir(exist_ok=True)
        for blob in sorted(sub.iterdir()):
            shutil.move(blob, target_dir / blob.name)
            count += 1
        fsync_dir(target_dir)
    return count
