"""The content-addressed blob store: atomic writes, limits, crash leftovers and collection."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from modelplane.errors import NotFound, PayloadTooLarge
from modelplane.storage import BlobStore

HOUR = 3600


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def age(path: Path, seconds: float) -> None:
    """Make a file look ``seconds`` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_put_bytes_returns_the_sha256_and_stores_the_content(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(b"model weights")
    assert digest == sha(b"model weights")
    assert blobs.exists(digest)
    assert blobs.open_path(digest).read_bytes() == b"model weights"
    assert files_in(blobs.blob_dir) == [f"{digest[:2]}/{digest}"]
    assert files_in(blobs.tmp_dir) == []


def test_same_content_is_stored_once(blobs: BlobStore) -> None:
    first = blobs.put_bytes(b"same")
    second = blobs.put_bytes(b"same")
    other = blobs.put_bytes(b"different")
    assert first == second != other
    assert files_in(blobs.blob_dir) == sorted(f"{d[:2]}/{d}" for d in (first, other))
    assert files_in(blobs.tmp_dir) == []


def test_empty_blob(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(b"")
    assert digest == sha(b"")
    assert blobs.open_path(digest).read_bytes() == b""


def test_streamed_writes_hash_the_whole_stream(blobs: BlobStore) -> None:
    chunks = [b"a" * 1000, b"b" * 10, b"", b"c" * 5000]
    writer = blobs.writer(limit=10_000)
    for chunk in chunks:
        writer.write(chunk)
    assert writer.size == 6010
    assert writer.temp_path.read_bytes() == b"".join(chunks)
    digest = writer.commit()
    assert digest == sha(b"".join(chunks))
    assert blobs.open_path(digest).read_bytes() == b"".join(chunks)


def test_aborted_write_leaves_nothing(blobs: BlobStore) -> None:
    writer = blobs.writer(limit=100)
    writer.write(b"half an upload")
    writer.abort()
    writer.abort()  # a second abort is harmless
    assert files_in(blobs.blob_dir) == []
    assert files_in(blobs.tmp_dir) == []
    assert not blobs.exists(sha(b"half an upload"))


def test_write_up_to_the_limit_is_accepted(blobs: BlobStore) -> None:
    writer = blobs.writer(limit=10)
    writer.write(b"12345")
    writer.write(b"67890")
    assert blobs.exists(writer.commit())


def test_exceeding_the_limit_is_refused_and_cleaned_up(blobs: BlobStore) -> None:
    writer = blobs.writer(limit=10)
    writer.write(b"123456")
    with pytest.raises(PayloadTooLarge, match="10 bytes"):
        writer.write(b"78901")
    assert files_in(blobs.tmp_dir) == []
    assert files_in(blobs.blob_dir) == []


def test_uncommitted_write_is_invisible_and_cleaned_at_start(blobs: BlobStore) -> None:
    crashed = blobs.writer(limit=100)
    crashed.write(b"the server died here")
    assert crashed.temp_path.is_file()
    digest = sha(b"the server died here")
    try:
        assert not blobs.exists(digest)
        with pytest.raises(NotFound):
            blobs.open_path(digest)
        assert len(files_in(blobs.tmp_dir)) == 1

        assert blobs.clean_tmp(min_age_seconds=HOUR) == 0  # maybe another live server's
        assert len(files_in(blobs.tmp_dir)) == 1
        assert blobs.clean_tmp(min_age_seconds=0) == 1
        assert files_in(blobs.tmp_dir) == []
        assert not blobs.exists(digest)
    finally:
        crashed.abort()  # only closes the handle; the file is already gone


def test_clean_tmp_removes_old_leftovers_including_folders(blobs: BlobStore) -> None:
    old_file = blobs.tmp_dir / "upload-old"
    old_file.write_bytes(b"x")
    old_dir = blobs.tmp_dir / "extract-old"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "f").write_bytes(b"y")
    fresh = blobs.tmp_dir / "upload-fresh"
    fresh.write_bytes(b"z")
    age(old_file, 2 * HOUR)
    age(old_dir, 2 * HOUR)

    assert blobs.clean_tmp(min_age_seconds=HOUR) == 2
    assert sorted(p.name for p in blobs.tmp_dir.iterdir()) == ["upload-fresh"]


def test_a_fresh_store_on_existing_data_keeps_the_blobs(tmp_path: Path) -> None:
    digest = BlobStore(tmp_path / "store").put_bytes(b"durable")
    reopened = BlobStore(tmp_path / "store")
    reopened.clean_tmp()
    assert reopened.open_path(digest).read_bytes() == b"durable"


def test_collect_removes_only_old_unreferenced_blobs(blobs: BlobStore) -> None:
    kept_in_use = blobs.put_bytes(b"referenced")
    garbage = blobs.put_bytes(b"orphan")
    in_flight = blobs.put_bytes(b"just uploaded, row not written yet")
    age(blobs.path(kept_in_use), 2 * HOUR)
    age(blobs.path(garbage), 2 * HOUR)

    removed = blobs.collect({kept_in_use}, grace_seconds=HOUR)

    assert removed == [garbage]
    assert not blobs.exists(garbage)
    assert blobs.exists(kept_in_use)
    assert blobs.exists(in_flight)
    assert blobs.collect({kept_in_use}, grace_seconds=HOUR) == []


def test_uploading_existing_content_again_protects_it_from_collection(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(b"content")
    age(blobs.path(digest), 2 * HOUR)
    assert blobs.put_bytes(b"content") == digest  # a new upload of the same bytes
    assert blobs.collect(set(), grace_seconds=HOUR) == []
    assert blobs.exists(digest)


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "abc",
        "A" * 64,
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "../" + "a" * 61,
        "a" * 62 + "/x",
        "a" * 64 + "\n",
    ],
)
def test_non_hex_digests_are_not_found(blobs: BlobStore, digest: str) -> None:
    for lookup in (blobs.path, blobs.exists, blobs.open_path):
        with pytest.raises(NotFound):
            lookup(digest)


def test_well_formed_but_missing_digest(blobs: BlobStore) -> None:
    digest = sha(b"never stored")
    assert blobs.path(digest) == blobs.blob_dir / digest[:2] / digest
    assert not blobs.exists(digest)
    with pytest.raises(NotFound, match="missing"):
        blobs.open_path(digest)
