"""The backup file format: what a restore accepts, and what it refuses before installing."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import orjson
import pytest

from modelplane.storage import BlobStore
from modelplane.storage.backup import BackupError, install_blobs, read_backup, write_backup


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    blobs = BlobStore(tmp_path / "store")
    for content in (b"one", b"two", b""):
        blobs.put_bytes(content)
    db = tmp_path / "modelplane.db"
    db.write_bytes(b"not really a database")
    dest = tmp_path / "out" / "backup.tar"
    dest.parent.mkdir()
    manifest = write_backup(dest, db, {"kind": "sqlite", "revision": "0006"}, blobs)
    assert [b["digest"] for b in manifest["blobs"]] == sorted(sha(c) for c in (b"one", b"two", b""))
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind
    return dest


def rewrite(src: Path, dest: Path, members: dict[str, bytes | None]) -> Path:
    """Copy ``src`` replacing (bytes) or dropping (None) members, adding new ones."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin.getmembers():
            data = members.pop(m.name, tin.extractfile(m).read())  # type: ignore[union-attr]
            if data is not None:
                info = tarfile.TarInfo(m.name)
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
        for name, data in members.items():
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
    return dest


def test_a_good_backup_unpacks_and_installs(backup: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    manifest = read_backup(backup, staging)
    assert manifest["database"]["path"] == "database/modelplane.db"
    assert manifest["key_ids"] == []
    target = BlobStore(tmp_path / "restored")
    assert install_blobs(staging, target) == 3
    with target.open(sha(b"two")) as fh:
        assert fh.read() == b"two"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"manifest.json": None}, "no manifest"),
        ({"database/modelplane.db": None}, "missing database/modelplane.db"),
        ({"database/modelplane.db": b"other bytes"}, "checksum mismatch"),
        ({"../../etc/evil": b"x"}, "unexpected member"),
        ({"blobs/sha256/ab/" + "cd" * 32: b"x"}, "unexpected member"),  # wrong folder
        ({"blobs/sha256/" + sha(b"x")[:2] + "/" + sha(b"x"): b"x"}, "does not list"),
    ],
)
def test_bad_backups_are_refused(
    backup: Path, tmp_path: Path, change: dict[str, bytes | None], problem: str
) -> None:
    bad = rewrite(backup, tmp_path / "bad.tar", dict(change))
    with pytest.raises(BackupError, match=problem):
        read_backup(bad, tmp_path / "staging")


def test_a_plaintext_blob_must_hash_to_its_name(backup: Path, tmp_path: Path) -> None:
    with tarfile.open(backup) as tf:
        manifest = orjson.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    name = f"blobs/sha256/{sha(b'one')[:2]}/{sha(b'one')}"
    entry = next(b for b in manifest["blobs"] if b["path"] == name)
    entry["sha256"], entry["size"] = sha(b"eno"), 3  # a consistent manifest, a wrong blob
    bad = rewrite(
        backup, tmp_path / "bad.tar", {name: b"eno", "manifest.json": orjson.dumps(manifest)}
    )
    with pytest.raises(BackupError, match="does not hash to its name"):
        read_backup(bad, tmp_path / "staging")
