"""TensorFlow Serving REST API front end (``/v1/models/...``).

Only translates: HTTP ⇄ ``InferenceRequest``/``InferenceResponse``. A model is
a deployment; a version is the one it serves; a label is a registry alias of
the deployment's model, valid while it points at the served version. The POST
calls (``:predict``, ``:classify``, ``:regress``) are served by the raw ASGI
fast path; the FastAPI routes document them and answer the GET calls.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request, Response

from modelplane.api import tfserving_codec as codec
from modelplane.api import tfserving_examples as examples
from modelplane.api.deps import tenant
from modelplane.api.fastpath import Handler, Headers, Matcher, Result
from modelplane.errors import BadRequest, ModelplaneError, NotFound, Unavailable
from modelplane.schemas.registry import TensorSpec
from modelplane.serving.dataplane import DataPlane, InferenceRequest, InferenceResponse
from modelplane.serving.manager import Deployed, Replica

router = APIRouter(tags=["inference: tensorflow serving REST"])
Tenant = Annotated[str, Depends(tenant)]
JSON = [(b"content-type", b"application/json")]
PREFIX = "/v1/models/"
VERBS = ("predict", "classify", "regress")


def plane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


Plane = Annotated[DataPlane, Depends(plane)]


def _error(exc: ModelplaneError) -> Result:
    headers = list(JSON)
    if isinstance(exc, Unavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return exc.status, headers, orjson.dumps({"error": exc.message})


async def _wanted(
    dp: DataPlane, t: str, model: str, version: str | None, label: str | None
) -> int | None:
    """The version a ``/versions/{v}`` or ``/labels/{l}`` path asks for (None: any)."""
    if label is not None:
        return await dp.version_for_label(t, model, label)
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()):
        raise BadRequest(f"Failed to convert version: {version} to numeric.")
    return int(version)


def _serving(dep: Deployed, wanted: int | None) -> Replica:
    r = dep.active
    if r is None:
        raise Unavailable(f"model {dep.name!r} is {dep.state}: {dep.reason or 'not loaded'}")
    if wanted is not None and wanted != r.version:
        raise NotFound(
            f"Servable not found for request: Specific({dep.name}, {wanted}): "
            f"version {wanted} is not loaded (serving version {r.version})"
        )
    return r


# -- :predict, :classify, :regress ------------------------------------------------------
async def call(
    dp: DataPlane,
    t: str,
    verb: str,
    model: str,
    version: str | None,
    label: str | None,
    body: bytes,
) -> Result:
    """One POST call: (status, headers, body). Never raises ModelplaneError."""
    try:
        dep = dp.deployment(t, model)
        wanted = await _wanted(dp, t, model, version, label)
        sig = _serving(dep, wanted).signature
        if verb == "predict":
            inputs, row = codec.decode_predict(body, sig.inputs)
            resp = await dp.infer(t, model, wanted, InferenceRequest(inputs))
            return 200, JSON, codec.encode_predict(resp.outputs, row)
        return 200, JSON, await _examples(dp, t, verb, model, wanted, sig.outputs, sig.inputs, body)
    except ModelplaneError as exc:
        return _error(exc)


async def _examples(
    dp: DataPlane,
    t: str,
    verb: str,
    model: str,
    wanted: int | None,
    outputs: list[TensorSpec],
    input_specs: list[TensorSpec],
    body: bytes,
) -> bytes:
    if verb == "regress":
        target = examples.regress_output(model, outputs)
        inputs, n = examples.decode_examples(body, input_specs, verb)
        resp = await dp.infer(t, model, wanted, InferenceRequest(inputs, outputs=[target]))
        return examples.encode_regress(model, outputs, _output(resp, target), n)
    scores, labels = examples.classify_outputs(model, outputs)
    inputs, n = examples.decode_examples(body, input_specs, verb)
    wanted_outputs = [scores] if labels is None else [scores, labels]
    resp = await dp.infer(t, model, wanted, InferenceRequest(inputs, outputs=wanted_outputs))
    label_arr = resp.outputs.get(labels) if labels is not None else None
    return examples.encode_classify(model, outputs, _output(resp, scores), label_arr, n)


def _output(resp: InferenceResponse, name: str) -> np.ndarray:
    arr = resp.outputs.get(name)
    if arr is None:  # the model broke its own signature: a server fault, still in JSON
        raise ModelplaneError(f"model {resp.model!r} returned no output {name!r}")
    return arr


def parse_path(path: str) -> tuple[str, str, str | None, str | None] | None:
    """``(verb, model, version, label)`` of a TF Serving POST path; None if it is not one."""
    if not path.startswith(PREFIX):
        return None
    head, sep, verb = path[len(PREFIX) :].rpartition(":")
    if not sep or verb not in VERBS:
        return None
    parts = head.split("/")
    if not all(p and ":" not in p for p in parts):
        raise BadRequest(f"Malformed request: POST {path}")
    if len(parts) == 1:
        return verb, parts[0], None, None
    if len(parts) == 3 and parts[1] == "versions":
        return verb, parts[0], parts[2], None
    if len(parts) == 3 and parts[1] == "labels":
        return verb, parts[0], None, parts[2]
    raise BadRequest(f"Malformed request: POST {path}")


def fast_routes(dp: DataPlane) -> Matcher:
    """The fast-path matcher for ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:{verb}``."""

    def match(method: str, path: str) -> Handler | None:
        if method != "POST":
            return None
        try:
            found = parse_path(path)
        except BadRequest as exc:
            failure = _error(exc)

            async def malformed(headers: Headers, body: bytes, tenant_id: str) -> Result:
                return failure

            return malformed
        if found is None:
            return None
        verb, model, version, label = found

        def handle(headers: Headers, body: bytes, tenant_id: str) -> Awaitable[Result]:
            return call(dp, tenant_id, verb, model, version, label, body)

        return handle

    return match


def _post_routes(verb: str) -> None:
    """FastAPI twins of the fast-path routes: the OpenAPI document (and a fallback)."""
    summary = {
        "predict": 'Predict: {"instances": [...]} (row) or {"inputs": ...} (columnar)',
        "classify": 'Classify: {"examples": [{feature: value}], "context": {...}}',
        "regress": 'Regress: {"examples": [{feature: value}], "context": {...}}',
    }[verb]
    extra = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }

    async def _answer(
        request: Request, dp: DataPlane, t: str, model: str, version: str | None, label: str | None
    ) -> Response:
        body = await request.body()
        status, headers, body = await call(dp, t, verb, model, version, label, body)
        return Response(body, status, {k.decode(): v.decode() for k, v in headers})

    async def latest(model: str, request: Request, dp: Plane, t: Tenant) -> Response:
        return await _answer(request, dp, t, model, None, None)

    async def by_version(
        model: str, version: str, request: Request, dp: Plane, t: Tenant
    ) -> Response:
        return await _answer(request, dp, t, model, version, None)

    async def by_label(model: str, label: str, request: Request, dp: Plane, t: Tenant) -> Response:
        return await _answer(request, dp, t, model, None, label)

    for suffix, endpoint in (
        ("", latest),
        ("/versions/{version}", by_version),
        ("/labels/{label}", by_label),
    ):
        router.add_api_route(
            f"{PREFIX}{{model}}{suffix}:{verb}",
            endpoint,
            methods=["POST"],
            name=f"tfserving_{verb}_{endpoint.__name__}",
            summary=summary,
            openapi_extra=extra,
        )


for _verb in VERBS:
    _post_routes(_verb)


# -- status and metadata -------------------------------------------------------------
def _status(version: int, state: str, code: str = "OK", message: str = "") -> dict[str, Any]:
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


async def _model_status(
    dp: DataPlane, t: str, model: str, version: str | None, label: str | None
) -> dict[str, Any]:
    dep = dp.deployment(t, model)
    wanted = await _wanted(dp, t, model, version, label)
    found: dict[int, dict[str, Any]] = {}
    if dep.failed_version is not None:
        found[dep.failed_version] = _status(dep.failed_version, "END", "UNKNOWN", dep.reason or "")
    if dep.active is not None:
        found[dep.active.version] = _status(dep.active.version, "AVAILABLE")
    if dep.loading is not None and dep.loading not in found:
        found[dep.loading] = _status(dep.loading, "LOADING")
    if wanted is not None:
        if wanted not in found:
            raise NotFound(f"Could not find version {wanted} of model {model}")
        found = {wanted: found[wanted]}
    if not found:
        why = f" ({dep.state}: {dep.reason})" if dep.reason else f" ({dep.state})"
        raise NotFound(f"Could not find any versions of model {model}{why}")
    return {"model_version_status": [found[v] for v in sorted(found, reverse=True)]}


@router.get(PREFIX + "{model}")
async def model_status(model: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    """Status of the versions of a model (the one served, one loading, one that failed)."""
    return await _model_status(dp, t, model, None, None)


@router.get(PREFIX + "{model}/versions/{version}")
async def version_status(model: str, version: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    return await _model_status(dp, t, model, version, None)


@router.get(PREFIX + "{model}/labels/{label}")
async def label_status(model: str, label: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    return await _model_status(dp, t, model, None, label)


def _tensors(specs: list[TensorSpec]) -> dict[str, Any]:
    return {
        s.name: {
            "dtype": codec.TF_TYPES.get(s.dtype, "DT_INVALID"),
            "tensor_shape": {
                "dim": [{"size": str(d), "name": ""} for d in s.shape],
                "unknown_rank": False,
            },
            "name": s.name,
        }
        for s in specs
    }


async def _metadata(
    dp: DataPlane, t: str, model: str, version: str | None, label: str | None
) -> dict[str, Any]:
    dep = dp.deployment(t, model)
    r = _serving(dep, await _wanted(dp, t, model, version, label))
    signature = {
        "inputs": _tensors(r.signature.inputs),
        "outputs": _tensors(r.signature.outputs),
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": dep.name, "signature_name": "", "version": str(r.version)},
        "metadata": {"signature_def": {"signature_def": {codec.DEFAULT_SIGNATURE: signature}}},
    }


@router.get(PREFIX + "{model}/metadata")
async def model_metadata(model: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    """The served version's signature, as a ``serving_default`` SignatureDef."""
    return await _metadata(dp, t, model, None, None)


@router.get(PREFIX + "{model}/versions/{version}/metadata")
async def version_metadata(model: str, version: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    return await _metadata(dp, t, model, version, None)


@router.get(PREFIX + "{model}/labels/{label}/metadata")
async def label_metadata(model: str, label: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    return await _metadata(dp, t, model, None, label)
