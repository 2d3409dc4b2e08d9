"""The security gate: raw ASGI, in front of everything (the inference fast path included).

For each HTTP call, once: find the key (``Authorization: Bearer`` or
``x-api-key``), check the role table, apply rate limits and quotas, put the
caller on ``scope["state"]`` (``tenant``, ``actor``, ``role``, ``key_id``) for
routes and the fast path to read, and queue an audit row for mutating calls
once their status is known. With auth off it passes calls straight through.

Refusals keep the protocol's error shape: ``{"error": "..."}`` everywhere,
OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on its routes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.api import openai
from modelplane.auth import Auth, Need, Principal, Role, classify
from modelplane.auth.audit import entry
from modelplane.auth.quotas import Limits
from modelplane.auth.roles import OPENAI_PATHS, READ_METHODS

REALM = b'Bearer realm="modelplane"'
QUOTA_RETRY_SECONDS = 60
_PUBLIC, _WRITE = Need.public, Need.write  # module constants: enum attribute lookups are slow
_ROLE_NAMES = {r: r.name for r in Role}
_OPENAI_CODES = {
    401: "invalid_api_key",
    403: "insufficient_permissions",
    429: "rate_limit_exceeded",
}


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip().decode("latin-1")
        elif name == b"x-api-key" and value.strip():
            return value.strip().decode("latin-1")
    return None


def _is_upload(method: str, path: str) -> bool:
    if method != "POST":
        return False
    if path.rstrip("/") == "/api/v1/datasets":
        return True
    parts = path.split("/")  # ["", "api", "v1", "models", m, "versions"]
    return len(parts) == 6 and parts[3] == "models" and parts[5] == "versions"


class Gate:
    """Wraps ``inner`` (the fast path around the FastAPI app ``app``)."""

    def __init__(self, inner: ASGIApp, app: Any, auth: Auth) -> None:
        self.inner = inner
        self.app = app  # the FastAPI app, as on the fast path: tests and tools use it directly
        self.auth = auth
        self.enabled = auth.enabled

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] == "lifespan":
            await self.inner(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes yet: none opens without a key
            key = _key(scope["headers"])
            if key is None or await self.auth.authenticate(key) is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.inner(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        need = classify(method, path, self.auth.metrics_public)
        if need is _PUBLIC:
            await self.inner(scope, receive, send)
            return
        key = _key(scope["headers"])
        who = await self.auth.authenticate(key) if key else None
        if who is None:
            why = "invalid, expired or revoked API key" if key else "API key required"
            await _refuse(send, path, Refused(401, why), key is not None)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["tenant"], state["actor"] = who.tenant, who.actor
        state["role"], state["key_id"] = _ROLE_NAMES[who.role], who.key_id
        # Mutations are audited; reads and inference (POST, but not a change) are not.
        audited = need >= _WRITE and method not in READ_METHODS
        try:
            if who.role < need:
                raise Refused(403, f"role {who.role.name!r} may not {method} {path}")
            limits = self.auth.quotas.limits(who.tenant)
            if limits.checked:
                await self._limit(who, limits, method, path, scope["headers"])
        except Refused as refused:
            await _refuse(send, path, refused)
            if audited:
                self._audit(scope, who, refused.status)
            return
        if audited or limits.max_concurrent:
            await self._run(scope, receive, send, who, limits, audited)
        else:
            await self.inner(scope, receive, send)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, who: Principal, limits: Limits,
        audited: bool,
    ) -> None:  # fmt: skip
        limiter = self.auth.limiter
        slot = None
        if limits.max_concurrent and limiter is not None:
            slot = await limiter.acquire(who.tenant, limits.max_concurrent)
            if slot is None:
                refused = Refused(
                    429, f"tenant {who.tenant!r} has {limits.max_concurrent} requests running", 1
                )
                await _refuse(send, scope["path"], refused)
                if audited:
                    self._audit(scope, who, 429)
                return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, watch if audited else send)
        finally:
            if slot is not None and limiter is not None:
                await limiter.release(who.tenant, slot)
            if audited:
                self._audit(scope, who, status)

    async def _limit(
        self, who: Principal, limits: Limits, method: str, path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:  # fmt: skip
        limiter = self.auth.limiter
        if limiter is None:
            return
        # The key first: a key over its own limit does not use up its tenant's budget.
        if limits.key_requests_per_second:
            wait = await limiter.hit(
                f"key:{who.key_id}", limits.key_requests_per_second, limits.key_burst
            )
            if wait:
                raise Refused(429, f"rate limit of key {who.actor!r} exceeded", wait)
        if limits.requests_per_second:
            wait = await limiter.hit(
                f"tenant:{who.tenant}", limits.requests_per_second, limits.burst
            )
            if wait:
                raise Refused(429, f"rate limit of tenant {who.tenant!r} exceeded", wait)
        if limits.max_stored_bytes and _is_upload(method, path):
            used = await asyncio.to_thread(self.auth.usage.stored_bytes, who.tenant)
            declared = dict(headers).get(b"content-length", b"0")
            incoming = int(declared) if declared.isdigit() else 0
            if used + incoming > limits.max_stored_bytes:
                raise Refused(
                    429,
                    f"storage quota of tenant {who.tenant!r} exceeded: {used} of "
                    f"{limits.max_stored_bytes} bytes used, this upload is {incoming} bytes",
                    QUOTA_RETRY_SECONDS,
                )
        if limits.max_jobs and method == "POST" and path.rstrip("/") == "/api/v1/jobs":
            active = await asyncio.to_thread(self.auth.usage.active_jobs, who.tenant)
            if active >= limits.max_jobs:
                raise Refused(
                    429,
                    f"tenant {who.tenant!r} already has {active} jobs queued or running "
                    f"(quota {limits.max_jobs})",
                    QUOTA_RETRY_SECONDS,
                )

    def _audit(self, scope: Scope, who: Principal, status: int) -> None:
        client = scope.get("client")
        self.auth.audit.record(
            entry(
                who.tenant,
                who.actor,
                who.key_id,
                f"{scope['method']} {self._template(scope)}",
                scope["path"],
                status,
                client[0] if client else "",
            )
        )

    def _template(self, scope: Scope) -> str:
        """The route's path template (``/api/v1/models/{name}``); the path if none matches."""
        route = scope.get("route")
        if route is None:
            for candidate in getattr(self.app, "routes", ()):
                match, _ = candidate.matches(scope)
                if match is Match.FULL:
                    route = candidate
                    break
        template = getattr(route, "path", None)
        return template if isinstance(template, str) else scope["path"]


async def _refuse(send: Send, path: str, refused: Refused, bad_key: bool = False) -> None:
    headers = [(b"content-type", b"application/json")]
    if refused.status == 401:
        headers.append(
            (b"www-authenticate", REALM + b', error="invalid_token"' if bad_key else REALM)
        )
    if refused.retry_after is not None:
        headers.append((b"retry-after", str(refused.retry_after).encode()))
    if path.rstrip("/") in OPENAI_PATHS:
        code = _OPENAI_CODES.get(refused.status)
        _, _, body = openai.error_result(
            openai.OpenAIError(refused.status, refused.message, None, code)
        )
    else:
        body = orjson.dumps({"error": refused.message})
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
