"""Artifacts as folders a runtime can load: linked or unpacked once into a cache, atomically.

The cache holds plaintext even when blobs are encrypted at rest (runtimes load
from files), so its folder is made 0700; it lives under the data dir and can be
deleted whenever no server runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from modelplane.storage.archives import extract_archive
from modelplane.storage.blobs import private_dir


def materialize(blob: Path, sha256: str, packaging: str, filename: str, cache_dir: Path) -> Path:
    """``cache_dir/<sha256>`` holding the artifact (a file, or an archive's contents)."""
    final = cache_dir / sha256
    if final.is_dir():
        return final
    private_dir(cache_dir)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-"))
    try:
        if packaging == "file":
            target = tmp / "content" / filename
            target.parent.mkdir()
            try:
                os.link(blob, target)
            except OSError:
                shutil.copyfile(blob, target)
        else:
            extract_archive(blob, packaging, tmp / "content")
        try:
            (tmp / "content").rename(final)
        except OSError:
            if not final.is_dir():
                raise  # otherwise another process won the race with the same content
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
