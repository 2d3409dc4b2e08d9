"""Dataset routes under /api/v1/datasets: upload, list, show, download, delete."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from modelplane.api.deps import actor, tenant
from modelplane.api.downloads import blob_response
from modelplane.api.upload import receive_upload
from modelplane.datasets.service import DatasetService, check_dataset_name, parse_meta
from modelplane.errors import BadRequest
from modelplane.schemas.datasets import FORMATS, Dataset, DatasetPage

router = APIRouter(prefix="/api/v1", tags=["datasets"])

# The download name's extension, by format.
_EXTENSIONS = {"csv": "csv", "parquet": "parquet", "npz": "npz", "jsonl": "jsonl", "images": "zip"}


def datasets(request: Request) -> DatasetService:
    svc: DatasetService = request.app.state.datasets
    return svc


Svc = Annotated[DatasetService, Depends(datasets)]
Tenant = Annotated[str, Depends(tenant)]
Actor = Annotated[str, Depends(actor)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string"},
                        "format": {
                            "type": "string",
                            "enum": list(FORMATS),
                            "description": "default: from the file extension",
                        },
                        "description": {"type": "string"},
                        "tags": {"type": "string", "description": "JSON object"},
                    },
                }
            }
        },
    }
}


@router.post("/datasets", status_code=201, openapi_extra=_UPLOAD_BODY)
async def upload_dataset(request: Request, svc: Svc, t: Tenant, who: Actor) -> Dataset:
    """Upload a file (multipart ``file`` + ``name``); its schema is inferred before it is kept."""
    form, writer, filename = await receive_upload(request, svc.new_writer, svc.settings, "dataset")
    try:
        fields: dict[str, Any] = dict(form)
        if "tags" in fields:
            try:
                fields["tags"] = orjson.loads(fields["tags"])
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"tags is not valid JSON: {exc}") from exc
        meta = parse_meta(fields)
    except BaseException:
        writer.abort()
        raise
    return await anyio.to_thread.run_sync(svc.finish_upload, t, meta, writer, filename, who)


@router.get("/datasets")
def list_datasets(
    svc: Svc,
    t: Tenant,
    prefix: Annotated[str, Query(max_length=128)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=512)] = None,
) -> DatasetPage:
    items, token = svc.store.list(t, prefix=prefix, limit=limit, page_token=page_token)
    return DatasetPage(datasets=items, next_page_token=token)


@router.get("/datasets/{name}")
def get_dataset(name: str, svc: Svc, t: Tenant) -> Dataset:
    return svc.store.get(t, check_dataset_name(name))


@router.get("/datasets/{name}/download", response_model=None)
def download_dataset(name: str, request: Request, svc: Svc, t: Tenant) -> Response:
    """Stream the file; ``ETag`` is its sha256, ``Range`` and ``If-None-Match`` honoured."""
    ds = svc.store.get(t, check_dataset_name(name))
    filename = f"{ds.name}.{_EXTENSIONS.get(ds.format, 'bin')}"
    # Not immutable (the default no-cache): a deleted name can be uploaded again with other
    # bytes, so clients revalidate by ETag.
    return blob_response(request, svc.blobs, ds.sha256, filename=filename)


@router.delete("/datasets/{name}", status_code=204)
def delete_dataset(name: str, svc: Svc, t: Tenant) -> Response:
    svc.store.delete(t, check_dataset_name(name))
    return Response(status_code=204)
