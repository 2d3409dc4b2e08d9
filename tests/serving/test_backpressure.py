"""Backpressure on a live server with a slow model: full queue 503, deadlines 504, hang-ups."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.serving.conftest import (
    api_client,
    deploy,
    infer,
    infer_body,
    output,
    publish,
    status,
    wait_for,
    wait_ready,
)
from tests.serving.models import calibrated_slow_onnx

ONE = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with a model that takes ~0.1 s a row, deployed two ways, one worker each.

    ``narrow``: a queue of 2, no batching. ``slow``: a longer queue, no batching.
    """
    srv = LiveServer(Settings(data_dir=tmp_path_factory.mktemp("bp") / "data")).start()
    try:
        with api_client(srv.url) as api:
            publish(api, "slow", calibrated_slow_onnx())
            common = {"max_batch_size": 1, "max_batch_delay_ms": 0, "instances": 1}
            deploy(api, "narrow", "slow", max_queue=2, **common)
            deploy(api, "slow", "slow", max_queue=64, **common)
            wait_ready(api, "narrow")
            wait_ready(api, "slow")
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with api_client(live.url) as c:
        yield c


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def burst(url: str, model: str, n: int, **kwargs: Any) -> list[httpx.Response]:
    """``n`` requests at once, each from its own thread and connection."""
    results: list[httpx.Response | None] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            start.wait(timeout=30)
            results[i] = infer(c, url, model, ONE, **kwargs)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in results), "a request never came back"
    return [r for r in results if r is not None]


class Busy:
    """Keep the one worker of ``model`` busy with ``n`` requests from background threads.

    On entry, waits until the first of them has been answered: the others are then
    running or queued, so whatever the test sends next waits behind them.
    """

    def __init__(self, url: str, api: httpx.Client, model: str, n: int) -> None:
        self.url, self.api, self.model = url, api, model
        self.responses: list[httpx.Response] = []
        self.threads = [threading.Thread(target=self._one) for _ in range(n)]

    def _one(self) -> None:
        with httpx.Client(timeout=60) as c:
            self.responses.append(infer(c, self.url, self.model, ONE))

    def __enter__(self) -> Busy:
        before = status(self.api, self.model)["batched_items"]
        for t in self.threads:
            t.start()
        assert wait_for(lambda: status(self.api, self.model)["batched_items"] > before, 60)
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in self.threads)


def test_an_overfilled_queue_answers_503_with_retry_after(
    live: LiveServer, api: httpx.Client
) -> None:
    refused: list[httpx.Response] = []
    responses: list[httpx.Response] = []
    for _ in range(5):  # bounded: one burst is nearly always enough
        batch = burst(live.url, "narrow", 12)
        responses += batch
        refused += [r for r in batch if r.status_code == 503]
        if refused:
            break
    assert {r.status_code for r in responses} <= {200, 503}, [r.text for r in responses]
    assert refused, "twelve requests at once never filled a queue of two"
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        assert "queue is full" in r.json()["error"]
    served = [r for r in responses if r.status_code == 200]
    assert served, "some requests should have been served"
    for r in served:
        np.testing.assert_array_equal(output(r), ONE * 2)
    # Once the rush is over, the deployment serves again.
    with httpx.Client(timeout=60) as c:
        np.testing.assert_array_equal(output(infer(c, live.url, "narrow", ONE)), ONE * 2)
    assert status(api, "narrow")["state"] == "ready"


def test_a_1_ms_request_timeout_header_answers_504(http: httpx.Client) -> None:
    r = infer(http, "", "slow", ONE, headers={"X-Request-Timeout-Ms": "1"})
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["error"]
    ok = infer(http, "", "slow", ONE, headers={"X-Request-Timeout-Ms": "60000"})
    np.testing.assert_array_equal(output(ok), ONE * 2)


def test_oip_timeout_parameter_in_microseconds_answers_504(
    live: LiveServer, http: httpx.Client
) -> None:
    body = infer_body(ONE, parameters={"timeout": 1000})  # 1 ms
    r = http.post("/v2/models/slow/infer", json=body)
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["error"]

    client = triton.InferenceServerClient(url=f"127.0.0.1:{live.port}", network_timeout=60)
    try:
        i = triton.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(ONE)
        with pytest.raises(InferenceServerException) as info:
            client.infer("slow", [i], timeout=1000)
        assert info.value.status() == "504"
        result = client.infer("slow", [i], timeout=60_000_000)
        np.testing.assert_array_equal(result.as_numpy("y"), ONE * 2)
    finally:
        client.close()


def test_the_deployment_timeout_applies_unless_the_request_sets_one(
    api: httpx.Client, http: httpx.Client
) -> None:
    assert api.patch("/deployments/slow", json={"timeout_ms": 1}).status_code == 200
    try:
        r = infer(http, "", "slow", ONE)
        assert r.status_code == 504, r.text
        ok = infer(http, "", "slow", ONE, headers={"X-Request-Timeout-Ms": "60000"})
        assert ok.status_code == 200, ok.text
    finally:
        assert api.patch("/deployments/slow", json={"timeout_ms": 30000}).status_code == 200


def settled_items(api: httpx.Client, model: str) -> int:
    """``batched_items`` once it stops changing (the last answers are recorded)."""
    seen: list[int] = []

    def stable() -> bool:
        seen.append(status(api, model)["batched_items"])
        return len(seen) >= 5 and len(set(seen[-5:])) == 1

    assert wait_for(stable, timeout=30)
    return seen[-1]


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(
    live: LiveServer, api: httpx.Client, http: httpx.Client
) -> None:
    before = settled_items(api, "slow")
    with Busy(live.url, api, "slow", 4) as busy:
        r = infer(http, "", "slow", ONE, headers={"X-Request-Timeout-Ms": "20"})
        assert r.status_code == 504, r.text
    assert [b.status_code for b in busy.responses] == [200] * 4
    assert settled_items(api, "slow") == before + 4


def test_a_client_that_hangs_up_while_queued_is_skipped(
    live: LiveServer, api: httpx.Client
) -> None:
    before = settled_items(api, "slow")
    body = json.dumps(infer_body(ONE)).encode()
    request = (
        "POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with (
        Busy(live.url, api, "slow", 4) as busy,
        socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock,
    ):
        sock.sendall(request)
        time.sleep(0.05)  # it waits behind the others; then the client hangs up
    assert [b.status_code for b in busy.responses] == [200] * 4
    assert settled_items(api, "slow") == before + 4  # the abandoned request never ran
    with httpx.Client(timeout=60) as c:
        np.testing.assert_array_equal(output(infer(c, live.url, "slow", ONE)), ONE * 2)
    assert settled_items(api, "slow") == before + 5
