"""Zipped image folders: which members are images, their classes, and how to decode them.

The layout is ``<class>/<image>`` (optionally below one common top folder, as
``zip -r digits.zip digits/`` makes). Decoding uses Pillow when it is installed;
without it, binary PGM/PPM decode natively and other formats are only
recognised by their magic bytes.
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import PurePosixPath
from types import ModuleType

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.storage.archives import normalize_member

SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pnm", ".tif", ".tiff", ".webp"}
)
MAX_IMAGE_BYTES = 64 * 1024**2
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass(frozen=True)
class Entry:
    member: str  # the name inside the zip, as stored
    label: str


def pillow() -> ModuleType | None:
    """``PIL.Image`` if Pillow is installed (optional dependency)."""
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        return None


def _ignored(parts: tuple[str, ...]) -> bool:
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def entries(zf: zipfile.ZipFile) -> tuple[list[Entry], int]:
    """Image members with their class, sorted by (class, path); and how many files were skipped.

    Call on an archive ``inspect_archive`` accepted (no traversal, links or bombs).
    """
    found: list[tuple[tuple[str, ...], str]] = []
    skipped = 0
    for zi in zf.infolist():
        name = normalize_member(zi.filename)
        if zi.is_dir() or not name:
            continue
        parts = PurePosixPath(name).parts
        if _ignored(parts) or PurePosixPath(name).suffix.lower() not in SUFFIXES:
            skipped += 1
            continue
        found.append((parts, zi.filename))
    tops = {parts[0] for parts, _ in found}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in found):
        found = [(parts[1:], member) for parts, member in found]  # one wrapping folder
    out: list[Entry] = []
    for parts, member in found:
        if len(parts) < 2:
            raise InvalidInput(
                f"image {member!r} is not in a class folder: lay images out as <class>/<image>"
            )
        out.append(Entry(member, parts[0]))
    out.sort(key=lambda e: (e.label, e.member))
    return out, skipped


def read_member(zf: zipfile.ZipFile, entry: Entry) -> bytes:
    if zf.getinfo(entry.member).file_size > MAX_IMAGE_BYTES:
        raise InvalidInput(f"image {entry.member!r} is larger than {MAX_IMAGE_BYTES} bytes")
    return zf.read(entry.member)


def sniff(data: bytes) -> str | None:
    """The image type by magic bytes, or None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _pnm(data: bytes) -> tuple[int, int, int, int, int]:
    """Binary PGM (P5) / PPM (P6) header: (height, width, channels, maxval, data offset)."""
    tokens: list[bytes] = []
    i = 2
    while len(tokens) < 3:
        while i < len(data) and data[i : i + 1].isspace():
            i += 1
        if data[i : i + 1] == b"#":
            i = data.find(b"\n", i) + 1 or len(data)
            continue
        j = i
        while j < len(data) and not data[j : j + 1].isspace():
            j += 1
        if j == i or not data[i:j].isdigit():
            raise ValueError("malformed PNM header")
        tokens.append(data[i:j])
        i = j
    width, height, maxval = (int(t) for t in tokens)
    if not (width and height and 0 < maxval < 65536):
        raise ValueError("malformed PNM header")
    return height, width, 3 if data[:2] == b"P6" else 1, maxval, i + 1


def _decode_pnm(data: bytes) -> np.ndarray:
    h, w, c, maxval, offset = _pnm(data)
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
    n = h * w * c
    if len(data) - offset < n * dtype.itemsize:
        raise ValueError("truncated PNM data")
    arr = np.frombuffer(data, dtype, n, offset).reshape(h, w, c)
    if maxval != 255:
        arr = (arr.astype(np.float64) * (255.0 / maxval)).round()
    return arr.astype(np.uint8)


def header_shape(data: bytes) -> tuple[list[int] | None, str | None]:
    """Without Pillow: ``([h, w, c], mode)`` from a PNG or PNM header where possible."""
    kind = sniff(data)
    if kind == "pnm":
        h, w, c, _, _ = _pnm(data)
        return [h, w, c], "L" if c == 1 else "RGB"
    if kind == "png" and len(data) >= 26:
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        gray = data[25] in (0, 4)
        return [h, w, 1 if gray else 3], "L" if gray else "RGB"
    return None, None


def _errors(image: ModuleType | None) -> tuple[type[BaseException], ...]:
    """What a corrupt, truncated or oversized image raises while decoding."""
    base = (OSError, ValueError, SyntaxError, EOFError, Warning)
    return base if image is None else (*base, image.DecompressionBombError)


def probe(data: bytes, name: str) -> tuple[list[int] | None, str | None]:
    """Check that an image decodes; its ``[h, w, c]`` and target mode (``L`` or ``RGB``)."""
    image = pillow()
    try:
        if image is None:
            if sniff(data) is None:
                raise ValueError("unrecognised image data")
            return header_shape(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", image.DecompressionBombWarning)
            with image.open(BytesIO(data)) as im:
                im.load()
                mode = "L" if im.mode in _GRAY_MODES else "RGB"
                return [im.height, im.width, 1 if mode == "L" else 3], mode
    except _errors(image) as exc:
        raise InvalidInput(f"image {name!r} does not decode: {exc}") from exc


def decode(data: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 ``[h, w, c]``: c = 1 for grey images, else 3; resized to ``(h, w)``."""
    image = pillow()
    try:
        if image is None:
            if sniff(data) != "pnm":
                raise ValueError("install Pillow to decode images other than binary PGM/PPM")
            arr = _decode_pnm(data)
            if size is not None and arr.shape[:2] != size:
                raise ValueError(f"is {arr.shape[0]}x{arr.shape[1]}; install Pillow to resize")
            return arr
        with warnings.catch_warnings():
            warnings.simplefilter("error", image.DecompressionBombWarning)
            im = image.open(BytesIO(data))
            im = im.convert("L" if im.mode in _GRAY_MODES else "RGB")
            if size is not None and (im.height, im.width) != size:
                im = im.resize((size[1], size[0]))
            arr = np.asarray(im, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr
    except _errors(image) as exc:
        raise InvalidInput(f"image {name!r} does not decode: {exc}") from exc
