"""Registry service: puts the blob store and the metadata store together.

Upload order is what keeps the registry consistent: the artifact streams into a
temp file, is inspected, is committed (fsync + rename) and only then is the
version row written. A failure at any step leaves no row and no visible blob.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplane.errors import InvalidInput, NotFound
from modelplane.registry.inspect import check_format, inspect_artifact
from modelplane.registry.names import ModelRef, check_name, parse_ref
from modelplane.registry.store import RegistryStore
from modelplane.schemas.registry import Alias, Artifact, NewVersion, Signature, Version
from modelplane.settings import Settings
from modelplane.storage.archives import (
    PACKAGINGS,
    ArchiveInfo,
    inspect_archive,
    packaging_from_filename,
)
from modelplane.storage.blobs import BlobStore, BlobWriter

log = logging.getLogger(__name__)
_TAG_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not _TAG_KEY.fullmatch(key):
            raise ValueError(f"invalid tag key {key!r}: 1-64 of letters, digits, '_.:-'")
        if len(value) > 1024:
            raise ValueError(f"tag {key!r}: value longer than 1024 characters")
    return tags


Tags = Annotated[dict[str, str], AfterValidator(check_tags)]
Metrics = dict[str, Annotated[float, Field(allow_inf_nan=False)]]


class VersionMeta(BaseModel):
    """Metadata sent with an upload (the ``metadata`` JSON field, or plain form fields)."""

    model_config = ConfigDict(extra="forbid")

    format: str
    packaging: str | None = None
    signature: Signature | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=dict)
    tags: Tags = Field(default_factory=dict)
    description: str = Field(default="", max_length=10_000)
    parents: list[str] = Field(default_factory=list, max_length=100)
    source: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        try:
            return check_format(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc

    @field_validator("packaging")
    @classmethod
    def _packaging(cls, v: str | None) -> str | None:
        if v is not None and v not in PACKAGINGS:
            raise ValueError(f"unknown packaging {v!r}; expected one of {', '.join(PACKAGINGS)}")
        return v

    @field_validator("parents")
    @classmethod
    def _parents(cls, v: list[str]) -> list[str]:
        for ref in v:
            try:
                parse_ref(ref)
            except InvalidInput as exc:
                raise ValueError(exc.message) from exc
        return v


def parse_meta(fields: dict[str, Any]) -> VersionMeta:
    try:
        return VersionMeta.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc)) from exc


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class RegistryService:
    def __init__(self, store: RegistryStore, blobs: BlobStore, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings
        # Called (from any thread) after an alias moves or a version appears, so that
        # deployments following an alias or "latest" swap at once.
        self.listeners: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    def set_alias(self, tenant: str, model: str, alias: str, version: int, actor: str) -> Alias:
        out = self.store.set_alias(tenant, model, alias, version, actor)
        self._changed()
        return out

    def delete_alias(self, tenant: str, model: str, alias: str, actor: str) -> None:
        self.store.delete_alias(tenant, model, alias, actor)
        self._changed()

    def rollback_alias(self, tenant: str, model: str, alias: str, actor: str) -> Alias:
        out = self.store.rollback_alias(tenant, model, alias, actor)
        self._changed()
        return out

    def new_writer(self) -> BlobWriter:
        return self.blobs.writer(self.settings.max_upload_bytes)

    def finish_upload(
        self,
        tenant: str,
        model: str,
        writer: BlobWriter,
        filename: str,
        meta: VersionMeta,
        actor: str,
    ) -> Version:
        """Inspect, commit the blob, then record the version. Blocking: run in a thread."""
        try:
            check_name(model, "model name")
            self.store.get_model(tenant, model)
            packaging = meta.packaging or packaging_from_filename(filename)
            archive: ArchiveInfo | None = None
            if packaging != "file":
                archive = inspect_archive(
                    writer.temp_path,
                    packaging,
                    self.settings.max_unpacked_bytes,
                    self.settings.max_archive_members,
                )
            inferred = inspect_artifact(meta.format, packaging, writer.temp_path, archive)
            for ref in meta.parents:  # before the commit, so a bad parent stores nothing
                try:
                    self.store.get_version(tenant, parse_ref(ref))
                except NotFound as exc:
                    raise InvalidInput(f"parent {ref!r}: {exc.message}") from exc
            size = writer.size
            digest = writer.commit()
        except BaseException:
            writer.abort()
            raise
        new = NewVersion(
            format=meta.format,
            artifact=Artifact(
                sha256=digest,
                size=size,
                packaging=packaging,
                filename=Path(filename).name[:255] or "artifact",
                files=archive.files if archive else {},
            ),
            signature=meta.signature or inferred or Signature(),
            params=meta.params,
            metrics=meta.metrics,
            tags=meta.tags,
            description=meta.description,
            parents=meta.parents,
            source=meta.source,
        )
        version = self.store.create_version(tenant, model, new, actor)
        self._changed()
        return version

    def artifact_path(self, tenant: str, ref: ModelRef) -> tuple[Version, Path]:
        version = self.store.get_version(tenant, ref)
        return version, self.blobs.open_path(version.artifact.sha256)

    def collect_garbage(self, also_referenced: set[str] | None = None) -> list[str]:
        """Delete blobs nothing references (after a grace period for in-flight uploads).

        ``also_referenced``: blobs other owners hold (datasets, job checkpoints, outputs).
        """
        keep = self.store.referenced_blobs() | (also_referenced or set())
        removed = self.blobs.collect(keep, self.settings.blob_gc_grace_seconds)
        if removed:
            log.info("removed %d unreferenced blob(s)", len(removed))
        return removed
