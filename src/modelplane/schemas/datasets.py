"""Dataset records as the API returns them; shared with the SDK and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FORMATS = ("csv", "parquet", "npz", "jsonl", "images")


class Column(BaseModel):
    """A table column, an array of an ``.npz`` file, or the image/label of an image folder."""

    name: str
    dtype: str  # pandas / numpy style: float64, int64, str, object, uint8, …
    shape: list[int] | None = None  # arrays and images only


class DatasetSchema(BaseModel):
    columns: list[Column] = Field(default_factory=list)
    rows: int | None = None  # None where arrays disagree on their first dimension
    extra: dict[str, Any] = Field(default_factory=dict)  # images: classes, shape, mode


class Dataset(BaseModel):
    # ``schema`` would shadow a BaseModel attribute: the field is ``schema_`` in Python.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    name: str
    format: str
    sha256: str
    size: int
    schema_: DatasetSchema = Field(alias="schema")
    description: str
    tags: dict[str, str]
    created_by: str
    created_at: datetime


class DatasetPage(BaseModel):
    datasets: list[Dataset]
    next_page_token: str | None
