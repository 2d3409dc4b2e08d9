"""Registry routes under /api/v1: models, versions, artifacts, aliases, lineage."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from modelplane.api.deps import actor, registry, tenant
from modelplane.api.downloads import blob_response
from modelplane.api.limits import depth_message, too_deep
from modelplane.api.upload import receive_upload
from modelplane.errors import BadRequest, Forbidden, InvalidInput, NotFound
from modelplane.registry.names import (
    MAX_VERSION,
    check_alias,
    check_name,
    parse_ref,
    parse_selector,
)
from modelplane.registry.service import Metrics, RegistryService, Tags, check_tags, parse_meta
from modelplane.schemas.registry import Alias, AliasEvent, Lineage, Model, Version

router = APIRouter(prefix="/api/v1", tags=["registry"])

Svc = Annotated[RegistryService, Depends(registry)]
Tenant = Annotated[str, Depends(tenant)]
Actor = Annotated[str, Depends(actor)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Token = Annotated[str | None, Query(max_length=512)]


def _name(name: str) -> str:
    return check_name(name, "model name")


def _name_field(name: str) -> str:
    try:
        return _name(name)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


ModelName = Annotated[str, AfterValidator(_name_field)]


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ModelName
    description: str = Field(default="", max_length=10_000)
    task: str = Field(default="", max_length=64)
    tags: Tags = Field(default_factory=dict)


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    task: str | None = Field(default=None, max_length=64)
    tags: Tags | None = None
    remove_tags: list[str] | None = None
    trusted: bool | None = None  # admin only: lets pickle-based artifacts load


def check_may_set_trust(request: Request) -> None:
    """AUTH HOOK: who may set or clear a model's ``trusted`` flag: admins only.

    Trusting a model lets its pickle artifacts run code on the server when loaded.
    The auth layer puts the caller's role name on ``request.state.role``; with no
    role there (auth off: a single-user server) everyone is the admin.
    """
    role = getattr(request.state, "role", None)
    if role is not None and role != "admin":
        raise Forbidden(f"only an admin may change whether a model is trusted (role {role!r})")


class VersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: Metrics | None = None
    tags: Tags | None = None
    remove_tags: list[str] | None = None
    description: str | None = Field(default=None, max_length=10_000)


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION)


class ModelPage(BaseModel):
    models: list[Model]
    next_page_token: str | None


class VersionPage(BaseModel):
    versions: list[Version]
    next_page_token: str | None


class AliasList(BaseModel):
    aliases: list[Alias]


class AliasHistory(BaseModel):
    events: list[AliasEvent]
    next_page_token: str | None


# -- models ------------------------------------------------------------------
@router.post("/models", status_code=201)
def create_model(body: ModelCreate, request: Request, svc: Svc, t: Tenant) -> Model:
    model = svc.store.create_model(t, body.name, body.description, body.task, body.tags)
    _forget_grants(request, t, model.name)  # a reused name starts unshared
    return model


def _tag_query(tag: str | None) -> str | None:
    """``key`` or ``key=value``; a key no tag could have is a 422 (not a database error)."""
    if tag is not None:
        key, _, value = tag.partition("=")
        try:
            check_tags({key: value})
        except ValueError as exc:
            raise InvalidInput(f"tag: {exc}") from exc
    return tag


def _forget_grants(request: Request, t: str, name: str) -> None:
    auth = getattr(request.app.state, "auth", None)
    if auth is not None:
        auth.grants.forget(t, "model", name)


@router.get("/models")
def list_models(
    svc: Svc,
    t: Tenant,
    prefix: Annotated[str, Query(max_length=128)] = "",
    tag: Annotated[str | None, Query(max_length=1100)] = None,
    task: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    page_token: Token = None,
) -> ModelPage:
    items, token = svc.store.list_models(
        t, prefix=prefix, tag=_tag_query(tag), task=task, limit=limit, page_token=page_token
    )
    return ModelPage(models=items, next_page_token=token)


@router.get("/models/{name}")
def get_model(name: str, svc: Svc, t: Tenant) -> Model:
    return svc.store.get_model(t, _name(name))


@router.patch("/models/{name}")
def update_model(name: str, body: ModelUpdate, request: Request, svc: Svc, t: Tenant) -> Model:
    if body.trusted is not None:
        check_may_set_trust(request)
    model = svc.store.update_model(
        t,
        _name(name),
        description=body.description,
        task=body.task,
        tags=body.tags,
        remove_tags=body.remove_tags,
        trusted=body.trusted,
    )
    if body.trusted:  # deployments that failed for want of trust may load now
        request.app.state.manager.model_changed(t, model.name)
    return model


@router.delete("/models/{name}", status_code=204)
def delete_model(name: str, request: Request, svc: Svc, t: Tenant) -> Response:
    svc.store.delete_model(t, _name(name))
    _forget_grants(request, t, name)
    return Response(status_code=204)


# -- versions ----------------------------------------------------------------
@router.post(
    "/models/{name}/versions",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "JSON object"},
                            "format": {"type": "string"},
                            "packaging": {"type": "string", "enum": ["file", "tar", "zip"]},
                            "description": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_version(name: str, request: Request, svc: Svc, t: Tenant, who: Actor) -> Version:
    """Upload an artifact (multipart: ``file`` plus ``metadata`` JSON and/or plain fields)."""
    _name(name)
    await anyio.to_thread.run_sync(svc.store.get_model, t, name)
    form, writer, filename = await receive_upload(request, svc.new_writer, svc.settings, "artifact")
    try:
        fields: dict[str, Any] = {}
        if "metadata" in form:
            raw = form.pop("metadata")
            depth = svc.settings.max_json_depth
            if depth and too_deep(raw.encode(), depth):
                raise BadRequest(f"metadata: {depth_message(depth)}")
            try:
                fields = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"metadata is not valid JSON: {exc}") from exc
            if not isinstance(fields, dict):
                raise InvalidInput("metadata must be a JSON object")
        for key, value in form.items():
            if key in fields:
                raise InvalidInput(f"{key!r} given both in metadata and as a form field")
            fields[key] = value
        meta = parse_meta(fields)
    except BaseException:
        writer.abort()
        raise
    return await anyio.to_thread.run_sync(svc.finish_upload, t, name, writer, filename, meta, who)


@router.get("/models/{name}/versions")
def list_versions(
    name: str,
    svc: Svc,
    t: Tenant,
    tag: Annotated[str | None, Query(max_length=1100)] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    limit: Limit = 100,
    page_token: Token = None,
) -> VersionPage:
    items, token = svc.store.list_versions(
        t,
        _name(name),
        tag=_tag_query(tag),
        limit=limit,
        page_token=page_token,
        descending=order == "desc",
    )
    return VersionPage(versions=items, next_page_token=token)


@router.get("/models/{name}/versions/{version}")
def get_version(name: str, version: str, svc: Svc, t: Tenant) -> Version:
    """``version`` is a number, an alias or ``latest``."""
    return svc.store.get_version(t, parse_selector(name, version))


@router.patch("/models/{name}/versions/{version}")
def update_version(name: str, version: str, body: VersionUpdate, svc: Svc, t: Tenant) -> Version:
    return svc.store.update_version(
        t,
        parse_selector(name, version),
        metrics=body.metrics,
        tags=body.tags,
        remove_tags=body.remove_tags,
        description=body.description,
    )


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(name: str, version: int, svc: Svc, t: Tenant) -> Response:
    svc.store.delete_version(t, _name(name), version)
    return Response(status_code=204)


@router.get("/models/{name}/versions/{version}/artifact", response_model=None)
def download_artifact(name: str, version: str, request: Request, svc: Svc, t: Tenant) -> Response:
    """Stream the artifact; ``ETag`` is its sha256, ``Range`` and ``If-None-Match`` honoured."""
    v = svc.store.get_version(t, parse_selector(name, version))
    filename = f"{v.model}-v{v.version}-{v.artifact.filename}"
    return blob_response(
        request, svc.blobs, v.artifact.sha256, filename=filename,
        cache_control="private, max-age=31536000, immutable",  # versions never change
    )  # fmt: skip


@router.get("/models/{name}/versions/{version}/lineage")
def version_lineage(name: str, version: str, svc: Svc, t: Tenant) -> Lineage:
    return svc.store.lineage(t, parse_selector(name, version))


@router.get("/resolve/{ref}")
def resolve(ref: str, svc: Svc, t: Tenant) -> Version:
    """Resolve ``name``, ``name@3`` or ``name@alias`` to a version."""
    return svc.store.get_version(t, parse_ref(ref))


# -- aliases -----------------------------------------------------------------
@router.get("/models/{name}/aliases")
def list_aliases(name: str, svc: Svc, t: Tenant) -> AliasList:
    return AliasList(aliases=svc.store.list_aliases(t, _name(name)))


@router.put("/models/{name}/aliases/{alias}")
def set_alias(name: str, alias: str, body: AliasSet, svc: Svc, t: Tenant, who: Actor) -> Alias:
    return svc.set_alias(t, _name(name), check_alias(alias), body.version, who)


@router.get("/models/{name}/aliases/{alias}")
def get_alias(name: str, alias: str, svc: Svc, t: Tenant) -> Alias:
    check_alias(alias)
    for a in svc.store.list_aliases(t, _name(name)):
        if a.alias == alias:
            return a
    raise NotFound(f"alias {alias!r} of model {name!r} not found")


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, svc: Svc, t: Tenant, who: Actor) -> Response:
    svc.delete_alias(t, _name(name), check_alias(alias), who)
    return Response(status_code=204)


@router.post("/models/{name}/aliases/{alias}/rollback")
def rollback_alias(name: str, alias: str, svc: Svc, t: Tenant, who: Actor) -> Alias:
    return svc.rollback_alias(t, _name(name), check_alias(alias), who)


@router.get("/models/{name}/alias-history")
def alias_history(
    name: str,
    svc: Svc,
    t: Tenant,
    alias: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 100,
    page_token: Token = None,
) -> AliasHistory:
    events, token = svc.store.alias_history(
        t, _name(name), alias, limit=limit, page_token=page_token
    )
    return AliasHistory(events=events, next_page_token=token)
