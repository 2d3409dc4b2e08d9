"""Directory artifacts packed as tar (optionally gzip) or zip: checked, then unpacked safely.

Every member must be a plain file or directory with a relative path that stays
inside the destination: no absolute paths, no ``..``, no links, no devices.
Sizes and member counts are capped so an archive bomb is refused up front.
"""

from __future__ import annotations

import lzma
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelplane.errors import InvalidInput

PACKAGINGS = ("file", "tar", "zip")


@dataclass(frozen=True)
class ArchiveInfo:
    files: dict[str, int]  # relative path -> size

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def normalize_member(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or "\\" in name or any(part == ".." for part in p.parts) or not name:
        raise InvalidInput(f"archive member {name!r} escapes the artifact directory")
    parts = [part for part in p.parts if part != "."]
    return "/".join(parts)


def inspect_archive(path: Path, packaging: str, max_bytes: int, max_members: int) -> ArchiveInfo:
    """Validate an archive without unpacking it; 422 naming the first problem."""
    files: dict[str, int] = {}
    total = 0
    try:
        if packaging == "tar":
            with tarfile.open(path, "r:*") as tf:
                for count, m in enumerate(tf, start=1):
                    if count > max_members:
                        raise InvalidInput(f"archive has more than {max_members} members")
                    name = normalize_member(m.name)
                    if m.isdir():
                        continue
                    if not m.isfile():
                        raise InvalidInput(
                            f"archive member {m.name!r} is a link or special file; only regular "
                            "files and directories are allowed"
                        )
                    total += m.size
                    if name:
                        files[name] = m.size
                    if total > max_bytes:
                        raise InvalidInput(f"archive unpacks to more than {max_bytes} bytes")
        elif packaging == "zip":
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                if len(infos) > max_members:
                    raise InvalidInput(f"archive has more than {max_members} members")
                for zi in infos:
                    name = normalize_member(zi.filename)
                    if zi.is_dir():
                        continue
                    if (zi.external_attr >> 16) & 0o170000 == 0o120000:
                        raise InvalidInput(f"archive member {zi.filename!r} is a symbolic link")
                    total += zi.file_size
                    files[name] = zi.file_size
                    if total > max_bytes:
                        raise InvalidInput(f"archive unpacks to more than {max_bytes} bytes")
        else:
            raise InvalidInput(f"unknown packaging {packaging!r}; expected one of {PACKAGINGS}")
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        lzma.LZMAError,
        zlib.error,
    ) as exc:
        raise InvalidInput(f"artifact is not a valid {packaging} archive: {exc}") from exc
    if not files:
        raise InvalidInput("archive contains no files")
    return ArchiveInfo(files)


def extract_archive(path: Path, packaging: str, dest: Path) -> None:
    """Unpack a previously inspected archive into ``dest`` (created; must not exist)."""
    dest.mkdir(parents=True)
    try:
        if packaging == "tar":
            with tarfile.open(path, "r:*") as tf:
                tf.extractall(dest, filter="data")
        else:
            with zipfile.ZipFile(path) as zf:
                for zi in zf.infolist():
                    name = normalize_member(zi.filename)
                    if zi.is_dir() or not name:
                        continue
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(zi) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1024 * 1024)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def packaging_from_filename(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    if lower.endswith(".zip"):
        return "zip"
    return "file"
