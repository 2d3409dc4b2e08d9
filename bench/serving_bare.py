"""The ceiling: a raw ASGI app on uvicorn + httptools + uvloop answering OIP v2 y = 2x in process.

No framework, no validation, no model runtime: ``python bench/serving_bare.py PORT``.
"""

import sys

import orjson
import uvicorn

HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    x = orjson.loads(body)["inputs"][0]
    y = {"name": "y", "datatype": "FP32", "shape": x["shape"], "data": [2 * v for v in x["data"]]}
    out = orjson.dumps({"model_name": "double", "model_version": "1", "outputs": [y]})
    length = (b"content-length", str(len(out)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [*HEADERS, length]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning")  # fmt: skip
