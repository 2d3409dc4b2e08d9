"""A real webhook receiver on 127.0.0.1: a tiny threaded ``http.server`` that records bodies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Answers each POST with the next status of ``statuses`` (then 200) and keeps the body."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.release = threading.Event()  # cleared: every POST waits until it is set
        self.release.set()
        self.waiting = threading.Event()  # set once a POST is held
        self.bodies: list[dict[str, Any]] = []  # every POST, whatever was answered
        self.accepted: list[dict[str, Any]] = []  # POSTs answered 2xx
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                if not receiver.release.is_set():
                    receiver.waiting.set()
                    receiver.release.wait(60)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.bodies.append(body)
                    if status < 300:
                        receiver.accepted.append(body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = list(self.accepted)
            if check(got):
                return got
            assert time.monotonic() < deadline, f"receiver got {got}"
            time.sleep(0.05)


@contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    r = Receiver(statuses)
    r.thread.start()
    try:
        yield r
    finally:
        r.release.set()
        r.server.shutdown()
        r.server.server_close()
