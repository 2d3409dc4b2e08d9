"""The one internal request/response every protocol translates to and from.

Front ends (OIP v2, TF Serving, OpenAI) decode HTTP into an
``InferenceRequest``, call ``DataPlane.infer`` and encode the
``InferenceResponse``. Validation against the model's signature, batching,
deadlines and (later) auth and metrics live here and below, once.

Text generation takes the same way in: ``generate`` finds the deployment under
the same tenant and sharing rules and opens a stream of token events on its
serving replica (``modelplane.serving.streams``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelplane.errors import BadRequest, InvalidInput, NotFound
from modelplane.monitoring.ticket import TICKET
from modelplane.registry.names import ModelRef, check_alias
from modelplane.runtimes.base import Arrays
from modelplane.schemas.registry import Signature, TensorSpec
from modelplane.serving.manager import Deployed, ModelManager
from modelplane.serving.streams import TextStream


@dataclass(slots=True)
class InferenceRequest:
    inputs: Arrays
    outputs: list[str] | None = None  # None: all outputs
    id: str | None = None
    timeout_ms: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceResponse:
    model: str
    version: int
    outputs: Arrays
    id: str | None = None


def dtype_matches(spec: TensorSpec, arr: np.ndarray) -> bool:
    if spec.dtype == "string":
        return arr.dtype == object or arr.dtype.kind in "US"
    if spec.dtype == "unknown":
        return True
    return arr.dtype == np.dtype(spec.dtype)


def check_inputs(sig: Signature, inputs: Arrays) -> None:
    """Names, dtypes and shapes against the signature; 400 naming the first problem."""
    if not sig.inputs:
        return
    expected = {s.name: s for s in sig.inputs}
    for name in inputs:
        if name not in expected:
            raise BadRequest(f"unknown input {name!r}; the model takes {sorted(expected)}")
    rows = None
    for spec in sig.inputs:
        arr = inputs.get(spec.name)
        if arr is None:
            raise BadRequest(f"missing input {spec.name!r}")
        if not dtype_matches(spec, arr):
            raise BadRequest(f"input {spec.name!r}: expected dtype {spec.dtype}, got {arr.dtype}")
        if spec.shape and (
            arr.ndim != len(spec.shape)
            or any(d >= 0 and d != a for d, a in zip(spec.shape, arr.shape, strict=False))
        ):
            raise BadRequest(
                f"input {spec.name!r}: expected shape {spec.shape} (-1 = any), "
                f"got {list(arr.shape)}"
            )
        if arr.ndim == 0:
            raise BadRequest(f"input {spec.name!r}: a scalar has no batch dimension")
        if rows is not None and arr.shape[0] != rows:
            raise BadRequest("all inputs must have the same batch size (first dimension)")
        rows = arr.shape[0]


class DataPlane:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def deployment(self, tenant: str, name: str) -> Deployed:
        """The tenant's deployment, or ``<owner>~<name>`` that its owner shared with it."""
        dep = self.manager.deployments.get((tenant, name))
        dep = dep if dep is not None else self._shared(tenant, name)
        ticket = TICKET.get()
        if ticket is not None:  # metrics and usage are labelled with the name the caller used
            ticket.deployment = name
        return dep

    def _shared(self, tenant: str, name: str) -> Deployed:
        owner, sep, own_name = name.partition("~")
        grants = self.manager.grants
        if sep and grants is not None and grants.allows(tenant, "deployment", owner, own_name):
            dep = self.manager.deployments.get((owner, own_name))
            if dep is not None:
                return dep
        raise NotFound(f"deployment {name!r} not found")

    async def version_for_label(self, tenant: str, name: str, label: str) -> int:
        """The version that alias ``label`` of the deployment's model points to (404 if none)."""
        dep = self.deployment(tenant, name)
        owner, ref = self.manager.source(dep.tenant, dep.model)
        try:
            ref = ModelRef(ref.model, alias=check_alias(label))
        except InvalidInput as exc:
            raise NotFound(f"label {label!r} of model {name!r} not found") from exc
        version = await asyncio.to_thread(self.manager.registry.store.get_version, owner, ref)
        return version.version

    async def infer(
        self, tenant: str, name: str, version: int | None, request: InferenceRequest
    ) -> InferenceResponse:
        dep = self.deployment(tenant, name)
        replica = dep.active
        if replica is not None:
            check_inputs(replica.signature, request.inputs)
            if request.outputs:
                known = {o.name for o in replica.signature.outputs}
                missing = [o for o in request.outputs if known and o not in known]
                if missing:
                    raise BadRequest(f"unknown output(s) {missing}; the model has {sorted(known)}")
        replica, outputs = await self.manager.infer(
            dep, version, request.inputs, request.timeout_ms
        )
        if request.outputs:
            outputs = {n: outputs[n] for n in request.outputs if n in outputs}
        return InferenceResponse(dep.name, replica.version, outputs, request.id)

    async def generate(
        self, tenant: str, name: str, request: dict[str, Any], timeout_ms: float | None = None
    ) -> TextStream:
        """Open a generation stream (request as in the worker contract); close it when done.

        Waits for a free sequence slot (at most ``timeout_ms``, the deployment's by default)
        and for the worker to admit the prompt, so bad prompts fail before any output.
        """
        dep = self.deployment(tenant, name)
        replica = self.manager.serving(dep)
        if replica.streams is None:
            raise BadRequest(f"deployment {name!r} does not generate text")
        timeout = (timeout_ms if timeout_ms is not None else dep.config.timeout_ms) / 1000
        return await replica.streams.open(request, time.monotonic() + timeout)

    def text_deployments(self, tenant: str) -> list[Deployed]:
        """The tenant's own deployments that serve a text-generation model now."""
        return [
            d
            for (t, _), d in sorted(self.manager.deployments.items())
            if t == tenant and d.active is not None and d.active.streams is not None
        ]
