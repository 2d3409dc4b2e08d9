"""Submitting jobs: every spec is checked by its kind before it is queued."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelplane.errors import InvalidInput
from modelplane.jobs.kinds import SubmitEnv, kind
from modelplane.jobs.store import JobStore
from modelplane.registry.service import RegistryService, describe_validation
from modelplane.schemas.jobs import Job
from modelplane.settings import Settings


class JobService:
    def __init__(
        self, store: JobStore, registry: RegistryService, datasets: Any, settings: Settings,
        deployments: Any = None, grants: Any = None,
    ) -> None:  # fmt: skip
        self.deployments = deployments
        self.grants = grants  # auth.grants.Grants: models and deployments shared across tenants
        self.store = store
        self.registry = registry
        self.datasets = datasets
        self.settings = settings

    def submit(self, tenant: str, actor: str, body: dict[str, Any]) -> Job:
        """``body``: ``{"kind": ..., "name": ..., <the kind's spec fields>}``."""
        body = dict(body)
        name = body.pop("kind", None)
        if not isinstance(name, str):
            raise InvalidInput("kind: field required (e.g. 'train')")
        k = kind(name)
        title = body.pop("name", "") or ""
        if not isinstance(title, str) or len(title) > 128:
            raise InvalidInput("name: a string of at most 128 characters")
        try:
            spec = k.spec.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput(describe_validation(exc)) from exc
        env = SubmitEnv(
            tenant, self.registry, self.datasets, self.settings, self.deployments, self.grants
        )
        k.check(spec, env)
        return self.store.submit(tenant, name, title, spec.model_dump(mode="json"), actor)
