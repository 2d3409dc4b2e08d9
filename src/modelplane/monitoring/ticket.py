"""A per-request ticket the serving layers fill in for metrics and metering.

The fast path opens a ``Ticket`` for each inference call and sets it in the
``TICKET`` context variable; the data plane names the deployment, the model
manager the version, and the batcher adds the rows and the share of the model
worker's measured compute time that belong to this request; the fast path
records the status it answered and the bytes it read and wrote (no wrapped
``receive``/``send``: two extra coroutines per call cost more than the
metrics). A context variable
(not a parameter) keeps every signature between them unchanged; with no ticket
set (metrics off, in-process callers) they record nothing.
"""

from __future__ import annotations

from contextvars import ContextVar

CLIENT_GONE = 499  # nginx's code for "client closed the request before the answer"


class Ticket:
    __slots__ = ("bytes_in", "bytes_out", "compute_seconds", "deployment", "rows", "status",
                 "version")  # fmt: skip

    def __init__(self) -> None:
        self.deployment = ""
        self.version = ""
        self.rows = 0
        self.compute_seconds = 0.0
        self.status = CLIENT_GONE  # until an answer starts
        self.bytes_in = 0
        self.bytes_out = 0


TICKET: ContextVar[Ticket | None] = ContextVar("modelplane_ticket", default=None)
