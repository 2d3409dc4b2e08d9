"""The worker process: hosts one loaded model and answers predict frames, one at a time.

Started by the gateway as ``python -m modelplane.serving.worker FD`` with one end
of a socketpair. Blocking and single-threaded on purpose: the model runtime owns
the CPU threads (onnxruntime/torch intra-op threads), and requests queue in the
gateway, where the batcher can coalesce them.

A text-generation model (``runtimes/generation.py``) also gets a
continuous-batching engine (``serving/scheduler.py``) and the ``generate`` and
``cancel`` ops of LLM_CONTRACT: while sequences run, the loop polls the socket
without blocking between decoding steps, so new requests and cancels take
effect at the next step; with nothing to decode it blocks on the socket.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from modelplane.serving.ipc import PREFIX, Arena, decode, encode

log = logging.getLogger("modelplane.worker")


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError
        got += k
    return bytes(buf)


def _send(
    sock: socket.socket,
    header: dict[str, Any],
    arrays: dict[str, Any] | None = None,
    arena: Arena | None = None,
) -> None:
    # sendall, not sendmsg: a blocking sendmsg may write only part of a large frame.
    sock.sendall(b"".join(encode(header, arrays, arena)))


def _load(msg: dict[str, Any]) -> Any:
    from modelplane.runtimes import RuntimeOptions, runtime_class
    from modelplane.schemas.registry import Signature

    opts = msg.get("options", {})
    sig = opts.pop("signature", None)
    options = RuntimeOptions(**opts, signature=Signature.model_validate(sig) if sig else None)
    runtime = runtime_class(msg["format"]).load(Path(msg["artifact_dir"]), options)
    runtime.warmup()
    return runtime


def _engine(runtime: Any) -> Any:
    """The continuous-batching engine for a text-generation runtime, else None."""
    from modelplane.runtimes.generation import GenerationRuntime

    if not isinstance(runtime, GenerationRuntime):
        return None
    from modelplane.serving.scheduler import DEFAULT_MAX_SEQS, DEFAULT_MAX_WAITING, Engine

    extra = runtime.options.extra
    return Engine(
        runtime,
        max_seqs=int(extra.get("max_seqs") or DEFAULT_MAX_SEQS),
        max_cached_tokens=int(extra.get("max_cached_tokens") or 0) or None,
        max_waiting=int(extra.get("max_waiting", DEFAULT_MAX_WAITING)),
    )


def _error(rid: Any, exc: Exception) -> dict[str, Any]:
    from modelplane.errors import ModelplaneError

    log.debug("request %s failed: %s", rid, traceback.format_exc())
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    header = {"id": rid, "ok": False, "error": message[:2000], "kind": type(exc).__name__}
    if isinstance(exc, ModelplaneError):
        header["status"] = exc.status
    return header


class Session:
    """The worker's state: the loaded runtime, its engine (text generation) and the arenas."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.runtime: Any = None
        self.engine: Any = None
        self.inbox: Arena | None = None  # gateway -> worker
        self.outbox: Arena | None = None  # worker -> gateway

    def read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        hlen, plen = PREFIX.unpack(_read_exact(self.sock, PREFIX.size))
        return decode(_read_exact(self.sock, hlen), _read_exact(self.sock, plen), self.inbox)

    def handle(self, header: dict[str, Any], arrays: dict[str, Any]) -> bool:
        """Answer one frame; False when the worker should exit."""
        rid, op = header.get("id"), header.get("op")
        sock = self.sock
        # The gateway allows the outbox only when it has consumed every earlier answer.
        out = self.outbox if header.get("shm") else None
        try:
            if op == "predict":
                started = time.perf_counter()
                outputs = self.runtime.predict(arrays)
                took = time.perf_counter() - started
                _send(sock, {"id": rid, "ok": True, "seconds": took}, outputs, out)
            elif op == "generate":
                if self.engine is None:
                    from modelplane.errors import InvalidInput

                    raise InvalidInput("this model does not generate text")
                prompt = self.engine.submit(rid, header.get("request") or {})
                _send(sock, {"id": rid, "ok": True, "event": "start", "prompt_tokens": prompt})
            elif op == "cancel":  # no reply of its own: the stream ends with "cancelled"
                if self.engine is not None:
                    self.engine.cancel(header.get("target"))
            elif op == "load":
                if header.get("arenas"):
                    self.inbox, self.outbox = (Arena.attach(n) for n in header["arenas"])
                started = time.perf_counter()
                self.runtime = _load(header)
                self.engine = _engine(self.runtime)
                reply = {"id": rid, "ok": True, "signature": self.runtime.metadata().model_dump()}
                if self.engine is not None:
                    reply["generation"] = self.runtime.generation_info(
                        self.engine.max_seqs, self.engine.max_cached_tokens
                    )
                reply["load_seconds"] = time.perf_counter() - started
                _send(sock, reply)
            elif op == "echo":  # measures the transport alone (bench/ipc.py)
                _send(sock, {"id": rid, "ok": True}, arrays, out)
            elif op == "stop":
                _send(sock, {"id": rid, "ok": True})
                return False
            else:
                _send(sock, {"id": rid, "ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the gateway
            reply = _error(rid, exc)
            if op == "generate":  # a stream error always says its status (contract)
                reply.setdefault("status", 422)
            _send(sock, reply)
        return True

    def decode_step(self) -> None:
        frames = [encode(e.frame()) for e in self.engine.step()]
        if frames:  # one write per step for every sequence's frame
            self.sock.sendall(b"".join(b for f in frames for b in f))


def serve(sock: socket.socket) -> None:
    session = Session(sock)
    while True:
        try:
            if session.engine is not None and session.engine.busy:
                # Sequences are running: take every frame already here, then decode one step.
                while select.select([sock], [], [], 0)[0]:
                    if not session.handle(*session.read()):
                        return
                session.decode_step()
                continue
            if not session.handle(*session.read()):
                return
        except (EOFError, ConnectionError):  # the gateway went away
            return


def main() -> None:
    fd = int(sys.argv[1])
    logging.basicConfig(level=os.environ.get("MODELPLANE_WORKER_LOG", "WARNING"))
    sock = socket.socket(fileno=fd)
    try:
        serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
