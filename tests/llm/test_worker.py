"""The generate and cancel ops of a real worker process, spoken to in raw frames (LLM_CONTRACT)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelplane.serving.ipc import PREFIX, decode, encode


class RawWorker:
    """``python -m modelplane.serving.worker FD`` on one end of a socketpair, as workers.py does."""

    def __init__(self) -> None:
        self.sock, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelplane.serving.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self.sock.settimeout(120)

    def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        self.sock.sendall(b"".join(encode(header, arrays)))

    def recv(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        hlen, plen = PREFIX.unpack(self._exact(PREFIX.size))
        return decode(self._exact(hlen), self._exact(plen))

    def frame(self) -> dict[str, Any]:
        return self.recv()[0]

    def until_done(self, *rids: int) -> list[dict[str, Any]]:
        """Frames until every rid got its ``done`` (or an error)."""
        frames, open_ = [], set(rids)
        while open_:
            f = self.frame()
            frames.append(f)
            if f.get("event") == "done" or not f.get("ok"):
                open_.discard(f["id"])
        return frames

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(path: Path, **extra: Any) -> tuple[RawWorker, dict[str, Any]]:
    w = RawWorker()
    opts = {"task": "text-generation", "extra": extra}
    w.send(
        {
            "op": "load",
            "id": 0,
            "format": "transformers",
            "artifact_dir": str(path),
            "options": opts,
        }
    )
    return w, w.frame()


@pytest.fixture(scope="module")
def worker(gpt2_dir: Path) -> Iterator[RawWorker]:
    w, reply = start(gpt2_dir, max_seqs=4, max_cached_tokens=400, max_waiting=2)
    assert reply["ok"], reply
    assert reply["generation"] == {
        "context_length": 128,
        "max_seqs": 4,
        "max_cached_tokens": 400,
        "chat_template": False,
        "model_type": "gpt2",
    }
    assert reply["signature"]["inputs"][0]["name"] == "text_input"
    yield w
    w.close()


def events(frames: list[dict[str, Any]], rid: int) -> list[dict[str, Any]]:
    return [f for f in frames if f["id"] == rid]


def joined(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames)


def test_generate_streams_start_tokens_done(worker: RawWorker) -> None:
    worker.send({"op": "generate", "id": 1, "request": {"prompt": "one two", "stop": [" six"]}})
    frames = worker.until_done(1)
    kinds = [f["event"] for f in frames]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"token"}
    assert frames[0]["prompt_tokens"] == 2
    assert joined(frames[1:]) == " three four five"
    end = frames[-1]
    assert end["finish_reason"] == "stop" and end["prompt_tokens"] == 2
    assert end["completion_tokens"] == sum(len(f["tokens"]) for f in frames[1:-1])


def test_two_interleaved_generates(worker: RawWorker) -> None:
    worker.send({"op": "generate", "id": 2, "request": {"prompt": "alpha", "max_tokens": 40}})
    first = [worker.frame(), worker.frame()]
    assert [f["event"] for f in first] == ["start", "token"]
    # A late, short request gets all of its tokens before the early long one finishes.
    worker.send({"op": "generate", "id": 3, "request": {"prompt": "red", "max_tokens": 3}})
    frames = first + worker.until_done(2, 3)
    order = [(f["id"], f["event"]) for f in frames]
    assert order.index((3, "done")) < order.index((2, "done"))
    assert order.index((3, "start")) < order.index((3, "done"))
    assert joined(events(frames, 2)[1:]) == " beta gamma delta epsilon zeta eta theta iota kappa."
    assert events(frames, 3)[-1]["completion_tokens"] == 3


def test_errors_end_the_stream_with_a_status(worker: RawWorker) -> None:
    long = "one two three four five six seven eight nine ten. " * 20
    worker.send({"op": "generate", "id": 4, "request": {"prompt": long}})
    f = worker.frame()
    assert (f["id"], f["ok"], f["status"]) == (4, False, 400)
    assert "context is 128 tokens" in f["error"]
    worker.send({"op": "generate", "id": 5, "request": {"prompt": "x", "top_p": 7}})
    f = worker.frame()
    assert (f["id"], f["ok"], f["status"]) == (5, False, 422)


def test_wait_queue_full_is_503(worker: RawWorker) -> None:
    # In one write, so the worker reads them all before its next step: 4 slots + 2 waiting.
    sent = [
        encode({"op": "generate", "id": rid, "request": {"prompt": "one", "max_tokens": 2}})
        for rid in range(10, 17)
    ]
    worker.sock.sendall(b"".join(b"".join(f) for f in sent))
    frames = worker.until_done(*range(10, 17))
    refused = [f for f in frames if not f["ok"]]
    assert [(f["id"], f["status"]) for f in refused] == [(16, 503)]
    assert all(events(frames, rid)[-1]["event"] == "done" for rid in range(10, 16))


def test_predict_still_works(worker: RawWorker) -> None:
    worker.send({"op": "predict", "id": 6}, {"text_input": np.array(["the cat sat"], dtype=object)})
    header, arrays = worker.recv()
    assert header["ok"] and arrays["text_output"].tolist() == [" on the mat and looked at the dog."]


def test_cancel_ends_the_stream_and_the_worker_goes_on(untrained_dir: Path) -> None:
    w, reply = start(untrained_dir)
    try:
        assert reply["ok"]
        w.send({"op": "generate", "id": 1, "request": {"prompt": "the", "max_tokens": 120}})
        assert w.frame()["event"] == "start"
        assert w.frame()["event"] == "token"
        w.send({"op": "cancel", "id": 2, "target": 1})
        frames = w.until_done(1)
        end = frames[-1]
        assert end["event"] == "done" and end["finish_reason"] == "cancelled"
        assert end["completion_tokens"] < 120
        w.send({"op": "cancel", "id": 3, "target": 99})  # unknown: no reply at all
        w.send({"op": "echo", "id": 4})
        assert w.frame() == {"id": 4, "ok": True}
        w.send({"op": "stop", "id": 5})
        assert w.frame()["ok"]
        assert w.proc.wait(10) == 0
    finally:
        w.close()
