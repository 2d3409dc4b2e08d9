"""Request metrics and usage metering for every HTTP call, measured once, in raw ASGI.

The fast path hands each inference call to ``Instrument.inference`` and every
other call to ``Instrument.management``. Inference calls open a ``Ticket``
(``monitoring.ticket``) that the data plane, manager and batcher fill in, so the
request is labelled with the deployment and version that answered it and
metered with its rows and compute seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.ticket import TICKET, Ticket
from modelplane.monitoring.usage import UsageMeter
from modelplane.registry.tables import DEFAULT_TENANT

Serve = Callable[[Scope, Receive, Send, Any], Awaitable[None]]
_REGISTRY_PREFIX = "/api/v1/models"


class Instrument:
    def __init__(self, metrics: Metrics, usage: UsageMeter | None) -> None:
        self.metrics = metrics
        self.usage = usage if usage is not None and usage.enabled else None

    async def inference(
        self, serve: Serve, scope: Scope, receive: Receive, send: Send, handler: Any
    ) -> None:
        """Run ``serve(scope, receive, send, handler)``, the fast path's answer to one call,
        which records its status and byte counts on the ticket."""
        started = time.perf_counter()
        ticket = Ticket()
        token = TICKET.set(ticket)
        try:
            await serve(scope, receive, send, handler)
        finally:
            TICKET.reset(token)
            elapsed = time.perf_counter() - started
            state = scope.get("state")
            tenant = state.get("tenant", DEFAULT_TENANT) if state else DEFAULT_TENANT
            name = ticket.deployment
            protocol = _protocol(scope["path"])
            self.metrics.observe_request(
                protocol, tenant, name, ticket.version, ticket.status, elapsed
            )
            if name:  # an unknown deployment is neither metered nor given a label of its own
                bytes_in, bytes_out = ticket.bytes_in, ticket.bytes_out
                self.metrics.observe_bytes(tenant, name, bytes_in, bytes_out)
                if self.usage is not None:
                    self.usage.record(
                        tenant, name, ticket.rows, ticket.compute_seconds, bytes_in, bytes_out
                    )

    async def management(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, watched_send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The template, never the raw path: paths would give every model name a series.
            template = getattr(route, "path", None)
            template = template if isinstance(template, str) else "unmatched"
            state = scope.get("state")
            tenant = state.get("tenant", DEFAULT_TENANT) if state else DEFAULT_TENANT
            method = scope["method"]
            self.metrics.observe_management(method, template, tenant, status, elapsed)
            if template.startswith(_REGISTRY_PREFIX) and method != "HEAD":
                self.metrics.registry_op(str(getattr(route, "name", template)), status)


def _protocol(path: str) -> str:
    """The inference protocol of a fast-path route (the fast path serves only these)."""
    if path.startswith("/v2/"):
        return "oip"
    if path.startswith("/v1/models/"):
        return "tfserving"
    return "openai"
