"""Dataset service: the blob store and the dataset table put together.

Upload order keeps them consistent: the file streams into a temp file, its
schema is inferred (which also proves it parses as its format), the blob is
committed (fsync + rename) and only then is the row written. A failure before
the commit leaves nothing behind; a lost race for the name after it leaves an
unreferenced blob that garbage collection removes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplane.datasets.schema import check_format, format_from_filename, infer_schema
from modelplane.datasets.store import DatasetStore, NewDataset
from modelplane.errors import Conflict, InvalidInput
from modelplane.registry.names import check_name
from modelplane.registry.service import Tags, describe_validation
from modelplane.schemas.datasets import Dataset
from modelplane.settings import Settings
from modelplane.storage.blobs import BlobStore, BlobWriter


def check_dataset_name(name: str) -> str:
    return check_name(name, "dataset name")


def _name_field(name: str) -> str:
    try:
        return check_dataset_name(name)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


class DatasetMeta(BaseModel):
    """The form fields sent with an upload."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_name_field)]
    format: str | None = None
    description: str = Field(default="", max_length=10_000)
    tags: Tags = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            return check_format(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc


def parse_meta(fields: dict[str, Any]) -> DatasetMeta:
    try:
        return DatasetMeta.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc)) from exc


class DatasetService:
    def __init__(self, store: DatasetStore, blobs: BlobStore, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings

    def new_writer(self) -> BlobWriter:
        return self.blobs.writer(self.settings.max_upload_bytes)

    def finish_upload(
        self, tenant: str, meta: DatasetMeta, writer: BlobWriter, filename: str, actor: str
    ) -> Dataset:
        """Infer the schema, commit the blob, then record the dataset. Blocking: run in a thread."""
        try:
            fmt = meta.format or format_from_filename(filename)
            if self.store.exists(tenant, meta.name):  # before the (possibly long) inference
                raise Conflict(f"dataset {meta.name!r} already exists")
            schema = infer_schema(
                writer.temp_path,
                fmt,
                self.settings.max_unpacked_bytes,
                self.settings.max_archive_members,
            )
            size = writer.size
            digest = writer.commit()
        except BaseException:
            writer.abort()
            raise
        new = NewDataset(
            name=meta.name,
            format=fmt,
            sha256=digest,
            size=size,
            data_schema=schema,
            description=meta.description,
            tags=meta.tags,
        )
        return self.store.create(tenant, new, actor)

    def file(self, tenant: str, name: str) -> tuple[Dataset, Path]:
        """The dataset and the path of its bytes."""
        ds = self.store.get(tenant, check_dataset_name(name))
        return ds, self.blobs.open_path(ds.sha256)
