"""The worker process: hosts one loaded model and answers predict frames, one at a time.

Started by the gateway as ``python -m modelplane.serving.worker FD`` with one end
of a socketpair. Blocking and single-threaded on purpose: the model runtime owns
the CPU threads (onnxruntime/torch intra-op threads), and requests queue in the
gateway, where the batcher can coalesce them.
"""

from __future__ import annotations

import logging
import os
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


def serve(sock: socket.socket) -> None:
    runtime: Any = None
    inbox: Arena | None = None  # gateway -> worker
    outbox: Arena | None = None  # worker -> gateway
    while True:
        try:
            hlen, plen = PREFIX.unpack(_read_exact(sock, PREFIX.size))
            header, arrays = decode(_read_exact(sock, hlen), _read_exact(sock, plen), inbox)
        except EOFError:
            return
        rid, op = header.get("id"), header.get("op")
        # The gateway allows the outbox only when it has consumed every earlier answer.
        out = outbox if header.get("shm") else None
        try:
            if op == "predict":
                started = time.perf_counter()
                outputs = runtime.predict(arrays)
                took = time.perf_counter() - started  # the model alone: for metrics and metering
                _send(sock, {"id": rid, "ok": True, "seconds": took}, outputs, out)
            elif op == "load":
                if header.get("arenas"):
                    inbox, outbox = (Arena.attach(n) for n in header["arenas"])
                started = time.perf_counter()
                runtime = _load(header)
                sig = runtime.metadata().model_dump()
                took = time.perf_counter() - started
                _send(sock, {"id": rid, "ok": True, "signature": sig, "load_seconds": took})
            elif op == "echo":  # measures the transport alone (bench/ipc.py)
                _send(sock, {"id": rid, "ok": True}, arrays, out)
            elif op == "stop":
                _send(sock, {"id": rid, "ok": True})
                return
            else:
                _send(sock, {"id": rid, "ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the gateway
            log.debug("op %s failed: %s", op, traceback.format_exc())
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _send(
                sock, {"id": rid, "ok": False, "error": message[:2000], "kind": type(exc).__name__}
            )


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
