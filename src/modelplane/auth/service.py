"""``Auth``: one object holding keys, tenants, grants, quotas, the limiter and the audit log."""

from __future__ import annotations

import asyncio
import hmac

from sqlalchemy import Engine

from modelplane.auth.audit import AuditLog
from modelplane.auth.cache import KeyCache
from modelplane.auth.grants import Grants
from modelplane.auth.keys import KeyStore, Principal, digest, principal
from modelplane.auth.limiter import Limiter, check_redis
from modelplane.auth.quotas import QuotaBook, Usage
from modelplane.auth.roles import Role
from modelplane.auth.tenants import TenantStore
from modelplane.registry.tables import DEFAULT_TENANT
from modelplane.schemas.auth import ApiKey
from modelplane.settings import Settings

BOOTSTRAP = Principal(DEFAULT_TENANT, Role.admin, "bootstrap", "bootstrap")
MIN_BOOTSTRAP_CHARS = 16


class Auth:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.enabled = settings.auth
        self.metrics_public = settings.metrics_public
        ttl = settings.auth_cache_seconds
        self.keys = KeyStore(engine)
        self.tenants = TenantStore(engine)
        self.grants = Grants(engine, ttl)
        self.quotas = QuotaBook(self.tenants, settings, ttl)
        self.usage = Usage(engine)
        self.audit = AuditLog(engine)
        self.cache = KeyCache(ttl)
        secret = settings.bootstrap_key.get_secret_value() if settings.bootstrap_key else ""
        if secret and len(secret) < MIN_BOOTSTRAP_CHARS:
            raise ValueError(
                f"MODELPLANE_BOOTSTRAP_KEY must be at least {MIN_BOOTSTRAP_CHARS} characters"
            )
        self._bootstrap = digest(secret) if secret else None
        if self.enabled and settings.redis_url:
            check_redis(settings.redis_url)
        self.limiter = Limiter(settings.redis_url) if self.enabled else None

    async def authenticate(self, key: str) -> Principal | None:
        """Who holds ``key``; None if it is unknown, revoked or expired. Cached for ttl."""
        who = self.cache.get(key)
        if who is not None:
            return who
        if self._bootstrap is not None and hmac.compare_digest(digest(key), self._bootstrap):
            who = BOOTSTRAP
        else:
            found = await asyncio.to_thread(self.keys.verify, key)
            who = principal(found) if found is not None else None
        if who is not None:
            self.cache.put(key, who)
        return who

    def revoke(self, key_id: int) -> ApiKey:
        key = self.keys.revoke(key_id)
        self.cache.drop(str(key_id))
        return key

    async def close(self) -> None:
        await asyncio.to_thread(self.audit.stop)
        if self.limiter is not None:
            await self.limiter.close()
