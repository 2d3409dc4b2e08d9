"""Pack a model directory into a tar file for upload (the server unpacks it safely)."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path


def pack_directory(path: Path) -> Path:
    """Write ``path``'s regular files (symlinks followed, nothing outside) to a temp tar."""
    fd, name = tempfile.mkstemp(prefix="modelplane-", suffix=".tar")
    os.close(fd)
    root = path.resolve()
    try:
        with tarfile.open(name, "w") as tf:
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                real = file.resolve()
                if not real.is_relative_to(root):
                    raise ValueError(f"{file} links outside {path}")
                tf.add(real, arcname=file.relative_to(root).as_posix(), recursive=False)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)
