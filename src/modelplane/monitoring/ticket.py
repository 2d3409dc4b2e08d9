"""A per-request ticket the serving layers fill in for metrics and metering.

The fast path opens a ``Ticket`` for each inference call and sets it in the
``TICKET`` context variable; the data plane names the deployment, the model
manager the version, and the batcher adds the rows and the share of the model
worker's measured compute time that belong to this request. A context variable
(not a parameter) keeps every signature between them unchanged; with no ticket
set (metrics off, in-process callers) they record nothing.
"""

from __future__ import annotations

from contextvars import ContextVar


class Ticket:
    __slots__ = ("compute_seconds", "deployment", "rows", "version")

    def __init__(self) -> None:
        self.deployment = ""
        self.version = ""
        self.rows = 0
        self.compute_seconds = 0.0


TICKET: ContextVar[Ticket | None] = ContextVar("modelplane_ticket", default=None)
