"""API keys: made once, shown once, stored as a sha256 hash, found by their public prefix.

A key looks like ``mp_<prefix>_<secret>``: ``prefix`` (12 hex characters)
names the row and is shown in lists; ``secret`` is 32 random bytes. As the
secret is random and long, one sha256 pass is enough (no password stretching):
guessing is hopeless, and verification stays cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from modelplane.auth.roles import Role
from modelplane.auth.tables import ApiKeyRow, TenantRow
from modelplane.db import utcnow, writer
from modelplane.errors import BadRequest, InvalidInput, NotFound
from modelplane.registry.sql_store import decode_token, encode_token
from modelplane.schemas.auth import ROLES, ApiKey, NewApiKey

PREFIX_CHARS = 12
_DURATION = re.compile(r"(\d{1,9})\s*([smhdw])", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DAYS = 100 * 366


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: set on ``scope["state"]`` by the gate for every route to read."""

    tenant: str
    role: Role
    actor: str  # the key's name, or ``key-<id>``
    key_id: str
    expires_at: datetime | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> tuple[str, str]:
    """(prefix, full key)."""
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    return prefix, f"mp_{prefix}_{secrets.token_urlsafe(32)}"


def prefix_of(key: str) -> str | None:
    if len(key) > PREFIX_CHARS + 4 and key.startswith("mp_") and key[PREFIX_CHARS + 3] == "_":
        return key[3 : PREFIX_CHARS + 3]
    return None


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return Role[role]


def parse_expiry(value: str | None, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``45m``, ``90s``, ``2w`` from now, or an ISO date (UTC if naive)."""
    if value is None or not value.strip():
        return None
    now = now or utcnow()
    text = value.strip()
    m = _DURATION.fullmatch(text)
    if m:
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0 or seconds > _MAX_DAYS * 86400:
            raise InvalidInput(f"invalid expiry {value!r}: between 1 second and 100 years")
        return now + timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"invalid expiry {value!r}: use a duration (30d, 12h, 45m) or an ISO date"
        ) from exc
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= now:
        raise InvalidInput(f"invalid expiry {value!r}: it is in the past")
    return when


def to_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id, tenant=row.tenant, name=row.name, role=row.role,
        prefix=row.prefix, created_at=row.created_at, expires_at=row.expires_at,
        revoked_at=row.revoked_at, last_used_at=row.last_used_at,
    )  # fmt: skip


def principal(key: ApiKey) -> Principal:
    return Principal(
        key.tenant, Role[key.role], key.name or f"key-{key.id}", str(key.id), key.expires_at
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    def create(
        self, tenant: str, role: str, name: str = "", expires_at: datetime | None = None
    ) -> NewApiKey:
        check_role(role)
        prefix, key = new_key()
        with self._write() as s, s.begin():
            if s.get(TenantRow, tenant) is None:
                raise NotFound(f"tenant {tenant!r} not found")
            row = ApiKeyRow(
                tenant=tenant, name=name, role=role, prefix=prefix, hash=digest(key),
                created_at=utcnow(), expires_at=expires_at,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return NewApiKey(**to_key(row).model_dump(), key=key)

    def get(self, key_id: int) -> ApiKey:
        with self._read() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"key {key_id} not found")
            return to_key(row)

    def list(
        self,
        tenant: str | None = None,
        include_revoked: bool = False,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[ApiKey], str | None]:
        q = select(ApiKeyRow).order_by(ApiKeyRow.id).limit(limit + 1)
        if tenant:
            q = q.where(ApiKeyRow.tenant == tenant)
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked_at.is_(None))
        after = decode_token(page_token)
        if after is not None:
            if not isinstance(after, int):
                raise BadRequest("invalid page_token")
            q = q.where(ApiKeyRow.id > after)
        with self._read() as s:
            rows = list(s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return [to_key(r) for r in rows], encode_token(rows[-1].id) if more else None

    def revoke(self, key_id: int) -> ApiKey:
        """Revoke now (idempotent: a second call keeps the first time)."""
        with self._write() as s, s.begin():
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return to_key(row)

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if it is known, unrevoked and unexpired; None otherwise."""
        prefix = prefix_of(key)
        if prefix is None:
            return None
        with self._read() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()
            if row is None or not hmac.compare_digest(row.hash, digest(key)):
                return None
            found = to_key(row)
        now = utcnow()
        if found.revoked_at is not None or (found.expires_at and found.expires_at <= now):
            return None
        if found.last_used_at is None or now - found.last_used_at > timedelta(minutes=1):
            with self._write() as s, s.begin():
                s.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == found.id).values(last_used_at=now)
                )
        return found
