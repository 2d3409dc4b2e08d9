"""Encryption keys for blobs at rest: parsing, key ids, and the keyring rotation reads from.

Keys are 32 random bytes, written base64 (``openssl rand -base64 32``). A list
``"new,old,older"`` rotates: new blobs are sealed with the first key, blobs
sealed with any listed key stay readable. A blob names its key by a key id, the
first 8 bytes of sha256(key): enough to pick the key, useless to guess it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from modelplane.errors import ModelplaneError

KEY_BYTES = 32
KEY_ID_BYTES = 8


class KeyConfigError(ModelplaneError, ValueError):
    """The configured encryption keys cannot be used (never echoes a key)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


def parse_keys(text: str, source: str = "MODELPLANE_ENCRYPTION_KEY") -> list[bytes]:
    """Comma-separated base64 keys, first = the one new blobs use; duplicates dropped."""
    keys: list[bytes] = []
    for n, part in enumerate(text.split(","), start=1):
        item = part.strip()
        if not item:
            continue
        try:
            raw = base64.b64decode(item.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"{source}: key #{n} is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise KeyConfigError(
                f"{source}: key #{n} decodes to {len(raw)} bytes; AES-256 needs {KEY_BYTES} "
                "(make one with `openssl rand -base64 32`)"
            )
        if raw not in keys:
            keys.append(raw)
    if not keys:
        raise KeyConfigError(f"{source} is set but holds no key")
    return keys


def resolve_keys(key: str | None, keys: str | None) -> list[bytes]:
    """Keys from MODELPLANE_ENCRYPTION_KEY and/or MODELPLANE_ENCRYPTION_KEYS; [] when neither.

    Both may be set only to the same list, so a forgotten variable cannot silently
    decide which key new blobs are sealed with.
    """
    one = parse_keys(key) if key else []
    many = parse_keys(keys, "MODELPLANE_ENCRYPTION_KEYS") if keys else []
    if one and many and one != many:
        raise KeyConfigError(
            "MODELPLANE_ENCRYPTION_KEY and MODELPLANE_ENCRYPTION_KEYS are both set and differ; "
            "set one of them"
        )
    return one or many


@dataclass(frozen=True)
class Keyring:
    """The keys a store may read with; ``primary`` seals new blobs."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyConfigError("a keyring needs at least one key")

    @classmethod
    def of(cls, keys: list[bytes]) -> Keyring | None:
        return cls(tuple(keys)) if keys else None

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    @property
    def primary_id(self) -> bytes:
        return key_id(self.keys[0])

    def ids(self) -> list[str]:
        return [key_id(k).hex() for k in self.keys]

    def find(self, kid: bytes) -> bytes | None:
        return next((k for k in self.keys if key_id(k) == kid), None)
