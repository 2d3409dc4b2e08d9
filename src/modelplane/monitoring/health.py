"""Readiness: can this process reach its database and its artifact store right now?"""

from __future__ import annotations

import os
import tempfile

from sqlalchemy import Engine, text

from modelplane.storage import BlobStore


def check_database(engine: Engine) -> str | None:
    """``None`` when a ``SELECT 1`` answers, else why not."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def check_store(blobs: BlobStore) -> str | None:
    """``None`` when the store's folders exist and a temp file can be written, else why not."""
    try:
        if not blobs.blob_dir.is_dir():
            return f"artifact folder {blobs.blob_dir} is missing"
        fd, name = tempfile.mkstemp(dir=blobs.tmp_dir, prefix="ready-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def readiness(engine: Engine, blobs: BlobStore) -> dict[str, str]:
    """One entry per dependency: ``"ok"`` or the reason it failed (blocking: use a thread)."""
    checks = {"database": check_database(engine), "artifact_store": check_store(blobs)}
    return {name: why or "ok" for name, why in checks.items()}
