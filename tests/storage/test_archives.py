"""Directory artifacts (tar, tar.gz, zip): inspected without unpacking, then unpacked safely."""

from __future__ import annotations

import io
import lzma
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from modelplane.errors import InvalidInput
from modelplane.storage import extract_archive, inspect_archive

TarMode = Literal["w", "w:gz"]

KINDS = ["tar", "tar.gz", "zip"]
BIG = 10**9
NESTED = {
    "README.md": b"hello",
    "model/config.json": b"{}",
    "model/weights/part-0.bin": b"\x00" * 1000,
    "model/weights/part-1.bin": b"\x01" * 24,
}


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def write_tar(
    path: Path,
    files: dict[str, bytes],
    *,
    dirs: tuple[str, ...] = (),
    extra: tuple[tarfile.TarInfo, ...] = (),
    mode: TarMode = "w",
) -> Path:
    with tarfile.open(path, mode) as tf:
        for name in dirs:
            tf.addfile(special(name, tarfile.DIRTYPE))
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def write_zip(
    path: Path,
    files: dict[str, bytes],
    *,
    dirs: tuple[str, ...] = (),
    extra: tuple[tuple[zipfile.ZipInfo, bytes], ...] = (),
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in dirs:
            zf.writestr(name.rstrip("/") + "/", b"")
        for name, data in files.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def pack(
    tmp_path: Path, kind: str, files: dict[str, bytes], dirs: tuple[str, ...] = ()
) -> tuple[Path, str]:
    """An archive of ``kind`` (tar, tar.gz or zip); returns (path, packaging)."""
    if kind == "zip":
        return write_zip(tmp_path / "a.zip", files, dirs=dirs), "zip"
    mode: TarMode = "w:gz" if kind == "tar.gz" else "w"
    return write_tar(tmp_path / f"a.{kind}", files, dirs=dirs, mode=mode), "tar"


def refused(path: Path, packaging: str, match: str, **limits: int) -> InvalidInput:
    with pytest.raises(InvalidInput, match=match) as exc:
        inspect_archive(
            path, packaging, limits.get("max_bytes", BIG), limits.get("max_members", 1000)
        )
    return exc.value


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- inspect_archive -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_nested_folders_are_listed_with_sizes(tmp_path: Path, kind: str) -> None:
    path, packaging = pack(tmp_path, kind, NESTED, dirs=("model", "model/weights"))
    info = inspect_archive(path, packaging, BIG, 1000)
    assert info.files == {name: len(data) for name, data in NESTED.items()}
    assert info.total_bytes == 1031


@pytest.mark.parametrize("kind", KINDS)
def test_dot_slash_prefixes_are_dropped(tmp_path: Path, kind: str) -> None:
    path, packaging = pack(tmp_path, kind, {"./a/b.txt": b"abc", "./c": b"d"}, dirs=("./",))
    assert inspect_archive(path, packaging, BIG, 1000).files == {"a/b.txt": 3, "c": 1}


ESCAPING = ["../evil", "/abs", "/etc/cron.d/evil", "a/../../evil", "..\\evil", "a\\..\\..\\evil"]


@pytest.mark.parametrize("name", ESCAPING)
@pytest.mark.parametrize("kind", KINDS)
def test_members_that_escape_are_refused_by_name(tmp_path: Path, kind: str, name: str) -> None:
    path, packaging = pack(tmp_path, kind, {"ok.txt": b"fine", name: b"payload"})
    error = refused(path, packaging, "escapes the artifact directory")
    assert repr(name) in error.message


@pytest.mark.parametrize(
    "member",
    [
        special("link-in", tarfile.SYMTYPE, "ok.txt"),
        special("link-out", tarfile.SYMTYPE, "/etc/passwd"),
        special("hard-in", tarfile.LNKTYPE, "ok.txt"),
        special("hard-out", tarfile.LNKTYPE, "/etc/passwd"),
        special("dev-char", tarfile.CHRTYPE),
        special("dev-block", tarfile.BLKTYPE),
        special("pipe", tarfile.FIFOTYPE),
    ],
    ids=lambda m: m.name,
)
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_links_and_special_files_are_refused_by_name(
    tmp_path: Path, member: tarfile.TarInfo, mode: TarMode
) -> None:
    path = write_tar(tmp_path / "a.tar", {"ok.txt": b"fine"}, extra=(member,), mode=mode)
    error = refused(path, "tar", "link or special file")
    assert repr(member.name) in error.message


@pytest.mark.parametrize("target", ["ok.txt", "/etc/passwd", "../../outside"])
def test_zip_symlinks_are_refused_by_name(tmp_path: Path, target: str) -> None:
    link = zipfile.ZipInfo("models/link")
    link.create_system = 3  # unix, so the mode bits below are honoured
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = write_zip(tmp_path / "a.zip", {"ok.txt": b"fine"}, extra=((link, target.encode()),))
    error = refused(path, "zip", "symbolic link")
    assert "'models/link'" in error.message


@pytest.mark.parametrize("kind", KINDS)
def test_claimed_size_over_the_limit_is_refused(tmp_path: Path, kind: str) -> None:
    # Compresses to a few KiB (tar.gz, zip) but claims 2 MB once unpacked.
    path, packaging = pack(tmp_path, kind, {"a.bin": bytes(1_000_000), "b.bin": bytes(1_000_000)})
    refused(path, packaging, "more than 1500000 bytes", max_bytes=1_500_000)
    assert inspect_archive(path, packaging, 2_000_000, 1000).total_bytes == 2_000_000


def test_zip_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.zip", {f"layer-{i}": bytes(5_000_000) for i in range(4)})
    assert path.stat().st_size < 200_000
    refused(path, "zip", "more than 10000000 bytes", max_bytes=10_000_000)


@pytest.mark.parametrize("kind", KINDS)
def test_too_many_members_is_refused(tmp_path: Path, kind: str) -> None:
    files = {f"f{i}": b"x" for i in range(5)}
    path, packaging = pack(tmp_path, kind, files)
    refused(path, packaging, "more than 4 members", max_members=4)
    assert len(inspect_archive(path, packaging, BIG, 5).files) == 5


@pytest.mark.parametrize("kind", KINDS)
def test_folders_count_as_members(tmp_path: Path, kind: str) -> None:
    path, packaging = pack(tmp_path, kind, {"d/f": b"x"}, dirs=("d", "d/e", "d/e/g"))
    refused(path, packaging, "more than 3 members", max_members=3)


@pytest.mark.parametrize("dirs", [(), ("only", "folders")], ids=["empty", "only-folders"])
@pytest.mark.parametrize("kind", KINDS)
def test_archive_without_files_is_refused(tmp_path: Path, kind: str, dirs: tuple[str]) -> None:
    path, packaging = pack(tmp_path, kind, {}, dirs=dirs)
    refused(path, packaging, "contains no files")


@pytest.mark.parametrize("kind", KINDS)
def test_garbage_is_not_an_archive(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"a.{kind}"
    path.write_bytes(b"this is not an archive at all\n" * 40)
    packaging = "zip" if kind == "zip" else "tar"
    refused(path, packaging, f"not a valid {packaging} archive")


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_archive_is_refused(tmp_path: Path, kind: str) -> None:
    files = {"a": bytes(range(256)) * 40, "b": bytes(range(256)) * 40}
    path, packaging = pack(tmp_path, kind, files)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(path, packaging, f"not a valid {packaging} archive")


def test_corrupt_tar_xz_is_refused(tmp_path: Path) -> None:
    text = b"".join(b"line %d of a readable file\n" % i for i in range(20_000))
    tar = write_tar(tmp_path / "a.tar", {"a.txt": text, "b.txt": text})
    packed = bytearray(lzma.compress(tar.read_bytes()))
    middle = len(packed) // 2
    packed[middle : middle + 8] = bytes(b ^ 0xFF for b in packed[middle : middle + 8])
    path = tmp_path / "a.tar.xz"
    path.write_bytes(bytes(packed))
    refused(path, "tar", "not a valid tar archive")


def test_unknown_packaging_is_refused(tmp_path: Path) -> None:
    path, _ = pack(tmp_path, "tar", {"a": b"x"})
    refused(path, "rar", "unknown packaging 'rar'")


# -- extract_archive -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_extract_reproduces_the_files_inside_dest_only(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path, packaging = pack(src, kind, NESTED, dirs=("model", "model/weights", "model/empty"))
    dest = tmp_path / "out" / "unpacked"

    extract_archive(path, packaging, dest)

    assert tree(dest) == NESTED
    assert (dest / "model" / "weights").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["unpacked"]
    assert [p.name for p in src.iterdir()] == [path.name]


@pytest.mark.parametrize("kind", KINDS)
def test_extract_refuses_escaping_members_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path, packaging = pack(src, kind, {"ok.txt": b"fine", "../../evil": b"payload"})
    dest = tmp_path / "out" / "unpacked"

    with pytest.raises((InvalidInput, tarfile.TarError)):
        extract_archive(path, packaging, dest)

    assert not dest.exists()
    assert [p.name for p in tmp_path.rglob("evil*")] == []


def test_extract_into_an_existing_folder_is_refused(tmp_path: Path) -> None:
    path, packaging = pack(tmp_path, "tar", {"a": b"new"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        extract_archive(path, packaging, dest)
    assert tree(dest) == {"a": b"old"}
