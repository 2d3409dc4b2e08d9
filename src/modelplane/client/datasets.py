"""SDK calls for datasets (``Client.upload_dataset`` and friends delegate here)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.client.http import Progress, _ProgressReader
from modelplane.schemas.datasets import Dataset

if TYPE_CHECKING:
    from modelplane.client.http import Client


def zip_directory(path: Path) -> Path:
    """Write a folder of ``<class>/<image>`` files (symlinks followed, nothing outside) to a zip."""
    fd, name = tempfile.mkstemp(prefix="modelplane-", suffix=".zip")
    os.close(fd)
    root = path.resolve()
    try:
        with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as zf:  # images are compressed
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                real = file.resolve()
                if not real.is_relative_to(root):
                    raise ValueError(f"{file} links outside {path}")
                zf.write(real, file.relative_to(root).as_posix())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def upload_dataset(
    client: Client,
    name: str,
    path: str | os.PathLike[str],
    format: str | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Upload a file (format from its extension unless given), or a folder of images (zipped)."""
    src = Path(path)
    packed = zip_directory(src) if src.is_dir() else None
    upload = packed or src
    data = {"name": name, "description": description}
    if packed:
        format = format or "images"
    if format:
        data["format"] = format
    if tags:
        data["tags"] = json.dumps(tags)
    filename = f"{src.name}.zip" if packed else src.name
    try:
        with open(upload, "rb") as fh:
            reader = _ProgressReader(fh, upload.stat().st_size, progress)
            return client._get(
                Dataset,
                "POST",
                "/datasets",
                data=data,
                files={"file": (filename, reader, "application/octet-stream")},
                timeout=None,
            )
    finally:
        if packed:
            packed.unlink(missing_ok=True)


def list_datasets(client: Client, prefix: str = "", page_size: int = 100) -> Iterator[Dataset]:
    params = {"prefix": prefix or None, "limit": page_size}
    return (Dataset.model_validate(d) for d in client._pages("/datasets", "datasets", params))


def get_dataset(client: Client, name: str) -> Dataset:
    return client._get(Dataset, "GET", f"/datasets/{name}")


def delete_dataset(client: Client, name: str) -> None:
    client._call("DELETE", f"/datasets/{name}")


def download_dataset(
    client: Client,
    name: str,
    dest: str | os.PathLike[str],
    progress: Progress | None = None,
) -> Path:
    """Stream the file to ``dest`` (a file, or a folder to put it in); checks its sha256."""
    return client._fetch(f"/datasets/{name}/download", dest, name, progress)
