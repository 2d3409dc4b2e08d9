"""Blobs encrypted at rest: nothing readable on disk, wrong keys and tampering fail loudly,
keys rotate, and every reader (streams, ranges, plaintext paths) sees the same bytes."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from modelplane.settings import Settings
from modelplane.storage import BlobStore
from modelplane.storage.keys import KeyConfigError, Keyring, key_id, parse_keys, resolve_keys
from modelplane.storage.sealed import HEADER_SIZE, TAG, BlobIntegrityError, BlobKeyError

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
SEG = 1000  # small segments so a few KB cover many of them
SECRET = b"the-secret-weights:" + bytes(range(256)) * 20  # 5139 bytes: 6 segments


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def store(root: Path, *keys: bytes) -> BlobStore:
    return BlobStore(root, Keyring.of(list(keys)), root / "plain", segment=SEG)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sealed_file(blobs: BlobStore, digest: str) -> Path:
    p = blobs.stored(digest)
    assert p is not None and p.name.endswith(".enc")
    return p


def test_bytes_on_disk_do_not_contain_the_plaintext(tmp_path: Path) -> None:
    blobs = store(tmp_path, KEY_A)
    digest = blobs.put_bytes(SECRET)
    assert digest == sha(SECRET)  # still named by the plaintext: dedupe and ETags unchanged
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"the-secret-weights" not in on_disk
    assert SECRET[100:132] not in on_disk
    raw = sealed_file(blobs, digest).read_bytes()
    assert raw[:4] == b"MPBE" and raw[5:13] == key_id(KEY_A)
    assert len(raw) == HEADER_SIZE + len(SECRET) + 6 * TAG
    with blobs.open(digest) as fh:
        assert fh.read() == SECRET
    assert blobs.size(digest) == len(SECRET)
    assert list((tmp_path / "tmp").iterdir()) == []  # the plaintext upload temp is gone


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 7])
def test_round_trip_at_segment_boundaries(tmp_path: Path, size: int) -> None:
    blobs = store(tmp_path, KEY_A)
    data = os.urandom(size)
    digest = blobs.put_bytes(data)
    with blobs.open(digest) as fh:
        assert fh.read() == data
    assert blobs.open_path(digest).read_bytes() == data


def test_ranges_decrypt_only_what_they_touch(tmp_path: Path) -> None:
    blobs = store(tmp_path, KEY_A)
    digest = blobs.put_bytes(SECRET)
    with blobs.open(digest) as fh:
        for start, length in [(0, 10), (995, 10), (1000, 1), (2999, 1002), (5130, 100), (5139, 5)]:
            fh.seek(start)
            assert fh.read(length) == SECRET[start : start + length]
        fh.seek(-9, io.SEEK_END)
        assert fh.read() == SECRET[-9:]
    # A range far from a damaged segment still reads: segments are independent.
    raw = bytearray(sealed_file(blobs, digest).read_bytes())
    raw[HEADER_SIZE + 5 * (SEG + TAG) + 3] ^= 1  # last segment
    sealed_file(blobs, digest).write_bytes(bytes(raw))
    with blobs.open(digest) as fh:
        fh.seek(10)
        assert fh.read(20) == SECRET[10:30]
        fh.seek(5100)
        with pytest.raises(BlobIntegrityError):
            fh.read(10)


def test_a_wrong_key_fails_clearly_not_with_garbage(tmp_path: Path) -> None:
    digest = store(tmp_path, KEY_A).put_bytes(SECRET)
    other = store(tmp_path, KEY_B)
    with pytest.raises(BlobKeyError) as err:
        other.open(digest)
    assert key_id(KEY_A).hex() in err.value.message
    assert key_id(KEY_B).hex() in err.value.message  # what is configured
    with pytest.raises(BlobKeyError):
        other.open_path(digest)
    with pytest.raises(BlobKeyError, match="none"):
        BlobStore(tmp_path).open(digest)  # no key configured at all
    assert not (tmp_path / "plain" / digest).exists()


def test_rotation_reads_old_blobs_and_writes_with_the_new_key(tmp_path: Path) -> None:
    old = store(tmp_path, KEY_A).put_bytes(b"written with A")
    rotated = store(tmp_path, KEY_B, KEY_A)
    with rotated.open(old) as fh:
        assert fh.read() == b"written with A"
    new = rotated.put_bytes(b"written after rotation")
    assert sealed_file(rotated, new).read_bytes()[5:13] == key_id(KEY_B)
    assert sealed_file(rotated, old).read_bytes()[5:13] == key_id(KEY_A)
    with store(tmp_path, KEY_B).open(new) as fh:
        assert fh.read() == b"written after rotation"
    with pytest.raises(BlobKeyError):
        store(tmp_path, KEY_B).open(old)

    assert rotated.rekey() == 1  # re-seal what A sealed; then A can be retired
    assert rotated.rekey() == 0
    only_b = store(tmp_path, KEY_B)
    with only_b.open(old) as fh:
        assert fh.read() == b"written with A"
    with pytest.raises(BlobKeyError):
        store(tmp_path, KEY_A).open(old)


def test_plaintext_blobs_from_before_encryption_stay_readable_and_rekey_seals_them(
    tmp_path: Path,
) -> None:
    digest = BlobStore(tmp_path).put_bytes(SECRET)
    blobs = store(tmp_path, KEY_A)
    assert not blobs.is_sealed(digest)
    assert blobs.put_bytes(SECRET) == digest  # deduplicated against the plaintext one
    with blobs.open(digest) as fh:
        assert fh.read() == SECRET
    assert blobs.rekey() == 1
    assert blobs.is_sealed(digest)
    assert not blobs.path(digest).exists()
    assert blobs.open_path(digest).read_bytes() == SECRET


@pytest.mark.parametrize(
    "damage",
    ["flip-body", "flip-tag", "flip-header", "swap-segments", "cut-last-segment", "cut-bytes"],
)
def test_tampering_is_detected(tmp_path: Path, damage: str) -> None:
    blobs = store(tmp_path, KEY_A)
    digest = blobs.put_bytes(SECRET)
    path = sealed_file(blobs, digest)
    raw = bytearray(path.read_bytes())
    seg = SEG + TAG
    body = HEADER_SIZE
    if damage == "flip-body":
        raw[body + seg + 17] ^= 0x40
    elif damage == "flip-tag":
        raw[body + seg - 1] ^= 1
    elif damage == "flip-header":
        raw[20] ^= 1  # the salt: authenticated as associated data
    elif damage == "swap-segments":
        first, second = raw[body : body + seg], raw[body + seg : body + 2 * seg]
        raw[body : body + 2 * seg] = second + first
    elif damage == "cut-last-segment":
        raw = raw[: body + 5 * seg]  # whole segments remain: the new last was not sealed as last
    else:
        raw = raw[:-7]
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobIntegrityError), blobs.open(digest) as fh:
        fh.read()
    with pytest.raises(BlobIntegrityError):
        blobs.open_path(digest)
    assert not (blobs.plain_dir / digest).exists()


def test_a_blob_file_moved_under_another_name_is_detected(tmp_path: Path) -> None:
    blobs = store(tmp_path, KEY_A)
    one, two = blobs.put_bytes(b"model one"), blobs.put_bytes(b"model two")
    sealed_file(blobs, two).write_bytes(sealed_file(blobs, one).read_bytes())
    with pytest.raises(BlobIntegrityError), blobs.open(two) as fh:
        fh.read()


def test_open_path_decrypts_once_into_a_private_cache_that_gc_clears(tmp_path: Path) -> None:
    blobs = store(tmp_path, KEY_A)
    digest = blobs.put_bytes(SECRET)
    plain = blobs.open_path(digest)
    assert plain.read_bytes() == SECRET
    assert plain.parent == blobs.plain_dir
    assert stat.S_IMODE(blobs.plain_dir.stat().st_mode) == 0o700
    assert blobs.open_path(digest) == plain
    assert blobs.collect(set(), grace_seconds=0) == [digest]
    assert not plain.exists()
    assert not blobs.exists(digest)


def test_writers_stream_and_commit_sealed(tmp_path: Path) -> None:
    blobs = store(tmp_path, KEY_A)
    w = blobs.writer(limit=10_000)
    for i in range(0, len(SECRET), 333):
        w.write(SECRET[i : i + 333])
    assert w.temp_path.read_bytes() == SECRET  # inspection before commit sees plaintext
    digest = w.commit()
    assert digest == sha(SECRET)
    assert blobs.is_sealed(digest)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == []


# -- configuration -------------------------------------------------------------
def test_keys_parse_from_base64_lists() -> None:
    assert parse_keys(f"{b64(KEY_B)}, {b64(KEY_A)},{b64(KEY_B)}") == [KEY_B, KEY_A]
    urlsafe = base64.urlsafe_b64encode(KEY_A).decode()
    assert parse_keys(urlsafe) == [KEY_A]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        (" , ", "holds no key"),
    ],
)
def test_bad_keys_are_refused_without_echoing_them(text: str, problem: str) -> None:
    with pytest.raises(KeyConfigError, match=problem) as err:
        parse_keys(text)
    assert text.strip(" ,") == "" or text not in err.value.message


def test_both_variables_must_agree() -> None:
    assert resolve_keys(None, None) == []
    assert resolve_keys(b64(KEY_A), b64(KEY_A)) == [KEY_A]
    with pytest.raises(KeyConfigError, match="both set"):
        resolve_keys(b64(KEY_A), b64(KEY_B))


def test_the_store_takes_its_keys_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPLANE_ENCRYPTION_KEYS", raising=False)
    monkeypatch.setenv("MODELPLANE_ENCRYPTION_KEY", f"{b64(KEY_B)},{b64(KEY_A)}")
    settings = Settings(data_dir=tmp_path / "data")
    blobs = BlobStore.from_settings(settings)
    assert blobs.keys is not None and blobs.keys.keys == (KEY_B, KEY_A)
    assert blobs.plain_dir == (tmp_path / "data" / "cache" / "blobs").resolve()
    assert "KEY" not in repr(settings.encryption_key) and b64(KEY_B) not in repr(settings)
    env = settings.secret_env()
    assert env["MODELPLANE_ENCRYPTION_KEYS"] == env["MODELPLANE_ENCRYPTION_KEY"]
    monkeypatch.delenv("MODELPLANE_ENCRYPTION_KEY")
    assert BlobStore.from_settings(Settings(data_dir=tmp_path / "data")).keys is None
    assert Settings(data_dir=tmp_path).secret_env() == {}
