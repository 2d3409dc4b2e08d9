"""The registry store interface (MLflow-style): one abstract store, tested on every backend."""

from __future__ import annotations

import abc

from modelplane.registry.names import ModelRef
from modelplane.schemas.registry import Alias, AliasEvent, Lineage, Model, NewVersion, Version


class RegistryStore(abc.ABC):
    """Metadata of models, versions, aliases and lineage. Artifacts live in the blob store.

    Lists return ``(items, next_page_token)``; the token is opaque and ``None`` on
    the last page. Every method raises ``NotFound`` for what the tenant does not own.
    """

    @abc.abstractmethod
    def create_model(
        self, tenant: str, name: str, description: str, task: str, tags: dict[str, str]
    ) -> Model: ...

    @abc.abstractmethod
    def get_model(self, tenant: str, name: str) -> Model: ...

    @abc.abstractmethod
    def list_models(
        self,
        tenant: str,
        *,
        prefix: str = "",
        tag: str | None = None,
        task: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[Model], str | None]: ...

    @abc.abstractmethod
    def update_model(
        self,
        tenant: str,
        name: str,
        *,
        description: str | None = None,
        task: str | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        trusted: bool | None = None,
    ) -> Model:
        """``trusted``: only an admin may set it (the route checks; the store just records)."""

    @abc.abstractmethod
    def delete_model(self, tenant: str, name: str) -> None: ...

    @abc.abstractmethod
    def create_version(self, tenant: str, model: str, new: NewVersion, actor: str) -> Version:
        """Record a version whose blob is durable; numbers are consecutive per model."""

    @abc.abstractmethod
    def get_version(self, tenant: str, ref: ModelRef) -> Version: ...

    @abc.abstractmethod
    def list_versions(
        self,
        tenant: str,
        model: str,
        *,
        tag: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
        descending: bool = True,
    ) -> tuple[list[Version], str | None]: ...

    @abc.abstractmethod
    def update_version(
        self,
        tenant: str,
        ref: ModelRef,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        description: str | None = None,
    ) -> Version:
        """Metrics may be added (never changed); tags set or removed; the artifact never."""

    @abc.abstractmethod
    def delete_version(self, tenant: str, model: str, number: int) -> None: ...

    @abc.abstractmethod
    def set_alias(self, tenant: str, model: str, alias: str, version: int, actor: str) -> Alias: ...

    @abc.abstractmethod
    def delete_alias(self, tenant: str, model: str, alias: str, actor: str) -> None: ...

    @abc.abstractmethod
    def rollback_alias(self, tenant: str, model: str, alias: str, actor: str) -> Alias:
        """Move the alias back to the target it had before its current one."""

    @abc.abstractmethod
    def list_aliases(self, tenant: str, model: str) -> list[Alias]: ...

    @abc.abstractmethod
    def alias_history(
        self,
        tenant: str,
        model: str,
        alias: str | None = None,
        *,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[AliasEvent], str | None]:
        """Newest first."""

    @abc.abstractmethod
    def lineage(self, tenant: str, ref: ModelRef, max_depth: int = 50) -> Lineage: ...

    @abc.abstractmethod
    def referenced_blobs(self) -> set[str]: ...
