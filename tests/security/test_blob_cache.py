"""The decrypted blob cache (``cache/blobs``) stays under its size cap: least recently used
copies go first, copies handed out moments ago stay, and an evicted blob decrypts again."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelplane.settings import Settings
from modelplane.storage import BlobStore
from modelplane.storage.keys import Keyring, resolve_keys
from tests.security.helpers import new_key

SIZE = 1000


def store(tmp_path: Path, cap: int, in_use: float = 0.0) -> BlobStore:
    ring = Keyring.of(resolve_keys(new_key(), None))
    return BlobStore(
        tmp_path / "store", ring, tmp_path / "cache" / "blobs", plain_cap=cap,
        plain_in_use_seconds=in_use,
    )  # fmt: skip


def cached(s: BlobStore) -> set[str]:
    return {p.name for p in s.plain_dir.iterdir() if not p.name.startswith(".tmp-")}


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_least_recently_used_copies_are_evicted_first(tmp_path: Path) -> None:
    s = store(tmp_path, cap=int(2.5 * SIZE))
    a, b, c, d = (s.put_bytes(bytes([i]) * SIZE) for i in range(4))
    assert s.is_sealed(a)  # on disk only encrypted
    pa = s.open_path(a)
    age(pa, 30)
    pb = s.open_path(b)
    age(pb, 20)
    s.open_path(c)  # three copies: over the cap; a is the oldest
    assert cached(s) == {b, c}
    age(s.plain_dir / c, 10)
    assert s.open_path(b) == pb  # a hit makes b the most recently used
    s.open_path(d)
    assert cached(s) == {b, d}  # c went, not b
    assert sum(p.stat().st_size for p in s.plain_dir.iterdir()) <= 2.5 * SIZE
    # an evicted blob decrypts again, identical
    assert s.open_path(a).read_bytes() == bytes([0]) * SIZE
    assert stat.S_IMODE(s.plain_dir.stat().st_mode) == 0o700


def test_copies_in_use_are_not_evicted(tmp_path: Path) -> None:
    s = store(tmp_path, cap=SIZE, in_use=60)
    a, b = s.put_bytes(b"a" * SIZE), s.put_bytes(b"b" * SIZE)
    pa, pb = s.open_path(a), s.open_path(b)
    assert cached(s) == {a, b}  # over the cap for now: a was handed out moments ago
    with open(pa, "rb") as reading:
        age(pa, 120)
        assert s.trim_plain() == [a]
        assert reading.read() == b"a" * SIZE  # an open reader keeps its data
    assert cached(s) == {b} and pb.is_file()


def test_no_cap_keeps_everything(tmp_path: Path) -> None:
    s = store(tmp_path, cap=0)
    digests = [s.put_bytes(bytes([i]) * SIZE) for i in range(5)]
    for digest in digests:
        age(s.open_path(digest), 100)
    assert s.trim_plain() == [] and cached(s) == set(digests)


@pytest.mark.parametrize("cap", [0, 12345])
def test_the_cap_is_a_setting(tmp_path: Path, cap: int) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", encryption_key=SecretStr(new_key()), blob_cache_bytes=cap
    )
    s = BlobStore.from_settings(settings)
    assert s.plain_cap == cap
    assert s.plain_dir == (tmp_path / "data" / "cache" / "blobs").resolve()
    assert Settings(data_dir=tmp_path).blob_cache_bytes > 0  # capped by default
