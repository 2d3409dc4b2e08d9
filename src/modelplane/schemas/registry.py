"""Registry records as the API returns them; shared with the SDK and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

FORMATS = (
    "onnx",
    "sklearn_onnx",
    "skops",
    "torchscript",
    "torch_export",
    "transformers",
    "pickle",  # .pkl / .joblib; loads only once an admin marks the model trusted
)


class TensorSpec(BaseModel):
    name: str
    dtype: str  # numpy-style: float32, int64, bool, string, …
    shape: list[int]  # -1 for a dynamic dimension


class Signature(BaseModel):
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)


class Model(BaseModel):
    name: str
    description: str
    task: str
    tags: dict[str, str]
    trusted: bool = False  # an admin allowed pickle-based artifacts of this model to load
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


class Artifact(BaseModel):
    sha256: str
    size: int
    packaging: str  # file | tar | zip
    filename: str
    files: dict[str, int] = Field(default_factory=dict)  # archive contents: path -> size


class Version(BaseModel):
    model: str
    version: int
    format: str
    artifact: Artifact
    signature: Signature
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    description: str
    parents: list[str]  # references "model@N"
    source: dict[str, Any]
    aliases: list[str]
    created_by: str
    created_at: datetime


class Alias(BaseModel):
    model: str
    alias: str
    version: int
    updated_at: datetime


class AliasEvent(BaseModel):
    id: int
    model: str
    alias: str
    action: str  # set | move | delete | rollback
    from_version: int | None
    to_version: int | None
    actor: str
    at: datetime


class LineageNode(BaseModel):
    model: str
    version: int
    depth: int  # 1 = direct parent / child


class Lineage(BaseModel):
    model: str
    version: int
    ancestors: list[LineageNode]
    descendants: list[LineageNode]


class NewVersion(BaseModel):
    """What the registry needs to record a version whose blob is already durable."""

    format: str
    artifact: Artifact
    signature: Signature = Field(default_factory=Signature)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    parents: list[str] = Field(default_factory=list)
    source: dict[str, Any] = Field(default_factory=dict)
