"""A stand-in worker process speaking LLM_CONTRACT's frames, for ``Worker`` tests.

``load`` answers with a ``generation`` object; ``generate`` sends ``start`` and then one
token per 20 ms until ``max_tokens`` ("x" each) or a ``cancel``; a prompt "die" makes the
process exit mid-stream; a prompt "long!" is refused with 400 naming the context; op
``cancels`` answers how many cancels took effect.
"""

from __future__ import annotations

import select
import socket
import sys
import time

from modelplane.serving.ipc import PREFIX, decode, encode


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    live: dict[int, int] = {}  # rid -> tokens left
    made: dict[int, int] = {}
    cancels = 0
    buf = b""

    def send(header: dict[str, object]) -> None:
        sock.sendall(b"".join(encode(header)))

    while True:
        ready = select.select([sock], [], [], 0.02 if live else None)[0]
        if ready:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            buf += chunk
        while len(buf) >= PREFIX.size:
            hlen, plen = PREFIX.unpack_from(buf)
            if len(buf) < PREFIX.size + hlen + plen:
                break
            head = buf[PREFIX.size : PREFIX.size + hlen]
            header, _ = decode(head, b"")
            buf = buf[PREFIX.size + hlen + plen :]
            rid, op = header["id"], header.get("op")
            if op == "load":
                gen = {"context_length": 8, "max_seqs": 4, "max_cached_tokens": 32,
                       "chat_template": False, "model_type": "fake"}  # fmt: skip
                send({"id": rid, "ok": True, "signature": {}, "generation": gen})
            elif op == "generate":
                req = header["request"]
                if req.get("prompt") == "long!":
                    why = "prompt is 9 tokens; this model's context is 8 tokens"
                    send({"id": rid, "ok": False, "status": 400, "error": why})
                    continue
                if req.get("prompt") == "die":
                    send({"id": rid, "ok": True, "event": "start", "prompt_tokens": 1})
                    time.sleep(0.05)
                    return
                live[rid], made[rid] = int(req.get("max_tokens") or 5), 0
                send({"id": rid, "ok": True, "event": "start", "prompt_tokens": 1})
            elif op == "cancels":  # for tests: how many cancels took effect
                send({"id": rid, "ok": True, "cancels": cancels})
            elif op == "cancel" and header["target"] in live:
                cancels += 1
                target = header["target"]
                del live[target]
                send({"id": target, "ok": True, "event": "done", "text": "",
                      "finish_reason": "cancelled", "prompt_tokens": 1,
                      "completion_tokens": made.pop(target)})  # fmt: skip
            elif op == "stop":
                send({"id": rid, "ok": True})
                return
        if live and not ready:  # one decoding step
            for rid in list(live):
                live[rid] -= 1
                made[rid] += 1
                send({"id": rid, "ok": True, "event": "token", "text": "x", "tokens": [7]})
                if live[rid] == 0:
                    del live[rid]
                    send({"id": rid, "ok": True, "event": "done", "text": "",
                          "finish_reason": "length", "prompt_tokens": 1,
                          "completion_tokens": made.pop(rid)})  # fmt: skip


if __name__ == "__main__":
    main()
