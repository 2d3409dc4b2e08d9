"""Job kinds: each validates its spec at submit time and runs in a job process.

A kind is looked up by name; its module is imported lazily so the gateway does
not pay for torch until a job actually runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from modelplane.errors import InvalidInput
from modelplane.jobs.context import JobContext
from modelplane.registry.service import RegistryService
from modelplane.settings import Settings


@dataclass
class SubmitEnv:
    """What a kind may consult when it checks a spec at submit time."""

    tenant: str
    registry: RegistryService
    datasets: Any  # datasets service (lookup by tenant and name)
    settings: Settings
    deployments: Any = None  # serving.store.DeploymentStore
    grants: Any = None  # auth.grants.Grants: what other tenants shared with this one


class Kind(Protocol):
    spec: type[BaseModel]

    def check(self, spec: Any, env: SubmitEnv) -> None:
        """Refuse at submit what would fail later: unknown dataset (404), column (422)…"""

    def run(self, spec: Any, ctx: JobContext) -> dict[str, Any]:
        """Do the work; return the job's result (e.g. the registered model version)."""


KINDS: dict[str, str] = {
    "batch_predict": "modelplane.jobs.kinds.batch_predict:KIND",
    "train": "modelplane.jobs.kinds.train:TRAIN",
    "federated_train": "modelplane.jobs.kinds.train:FEDERATED",
}


def kind(name: str) -> Kind:
    target = KINDS.get(name)
    if target is None:
        raise InvalidInput(f"unknown job kind {name!r}; expected one of {sorted(KINDS)}")
    module, _, attr = target.partition(":")
    found: Kind = getattr(importlib.import_module(module), attr)
    return found


class Cancelled(Exception):
    """Raised by a kind when ``ctx.should_stop()`` turns true."""
