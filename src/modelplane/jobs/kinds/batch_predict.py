"""``batch_predict``: run a model version (or a deployment's) over a dataset, into a file.

The dataset is cut into chunks; each finished chunk is stored as a blob and
recorded on the job, so a job taken over after its runner died skips the chunks
already done. The parts are joined into one JSONL or Parquet file, downloadable
at ``GET /api/v1/jobs/{id}/output``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelplane.auth.grants import SEP, granted, split_shared
from modelplane.errors import InvalidInput, NotFound
from modelplane.jobs.context import JobContext
from modelplane.jobs.kinds import Cancelled, SubmitEnv
from modelplane.registry.names import parse_ref
from modelplane.runtimes import RUNTIMES, RuntimeOptions, runtime_class
from modelplane.schemas.registry import Version
from modelplane.serving.store import DeploymentStore
from modelplane.storage.materialize import materialize


class BatchPredictSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    model: str | None = Field(
        default=None, description='"name", "name@3", "name@alias"; "owner~name…" if shared'
    )
    deployment: str | None = Field(
        default=None, description='use the version it serves ("owner~name" if shared)'
    )
    input: str | None = Field(default=None, description="model input (default: its only one)")
    features: list[str] | None = Field(default=None, description="columns (default: numeric)")
    keep: list[str] = Field(default_factory=list, description="columns copied to each output row")
    output_format: Literal["jsonl", "parquet"] = "jsonl"
    chunk_size: int = Field(default=1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_source(self) -> BatchPredictSpec:
        if (self.model is None) == (self.deployment is None):
            raise ValueError("give exactly one of 'model' or 'deployment'")
        return self


# (grantee, kind, owner, name) -> shared? (``auth.grants``)
Shared = Callable[[str, str, str, str], bool]


def _shared_ref(tenant: str, ref: str, shared: Shared) -> tuple[str, str]:
    """(owning tenant, reference) of ``name[@sel]`` or of a shared ``owner~name[@sel]``."""
    split = split_shared(ref)
    if split is None:
        return tenant, ref
    owner, rest = split
    if not shared(tenant, "model", owner, parse_ref(rest).model):
        raise NotFound(f"model {ref.partition('@')[0]!r} not found")  # as if it did not exist
    return owner, rest


def _source(
    spec: BatchPredictSpec, tenant: str, deployments: DeploymentStore, shared: Shared
) -> tuple[str, str]:
    """(owning tenant, model reference) the job reads: the model named, or the one a
    deployment serves (the tenant's own, or ``owner~deployment`` shared with it)."""
    if spec.model is not None:
        return _shared_ref(tenant, spec.model, shared)
    owner, name = tenant, str(spec.deployment)
    split = split_shared(name)
    if split is not None:
        owner, name = split
        if not shared(tenant, "deployment", owner, name):
            raise NotFound(f"deployment {spec.deployment!r} not found")
    for d in deployments.all():
        if d.tenant == owner and d.name == name:
            return _shared_ref(owner, d.model, shared)
    raise NotFound(f"deployment {spec.deployment!r} not found")


def _label(tenant: str, owner: str, model: str) -> str:
    return model if owner == tenant else f"{owner}{SEP}{model}"


class BatchPredict:
    spec = BatchPredictSpec

    def check(self, spec: BatchPredictSpec, env: SubmitEnv) -> None:
        ds = env.datasets.store.get(env.tenant, spec.dataset)  # 404 if not this tenant's
        shared: Shared = env.grants.allows if env.grants is not None else _nothing_shared
        owner, ref = _source(spec, env.tenant, env.deployments, shared)
        version = env.registry.store.get_version(owner, parse_ref(ref))
        if version.format not in RUNTIMES:
            raise InvalidInput(f"model: no runtime serves format {version.format!r}")
        if ds.format in ("csv", "parquet", "jsonl"):
            names = {c.name for c in ds.schema_.columns}
            missing = [c for c in [*(spec.features or []), *spec.keep] if c not in names]
            if missing:
                raise InvalidInput(f"features/keep: dataset {ds.name!r} has no column(s) {missing}")
        inputs = [t.name for t in version.signature.inputs]
        if spec.input is not None and inputs and spec.input not in inputs:
            raise InvalidInput(f"input: the model's inputs are {inputs}")

    def run(self, spec: BatchPredictSpec, ctx: JobContext) -> dict[str, Any]:
        engine = ctx.store.engine
        # Grants are checked again here: one revoked after the submit stops the job.
        owner, ref = _source(spec, ctx.tenant, DeploymentStore(engine), partial(granted, engine))
        version = ctx.registry.store.get_version(owner, parse_ref(ref))
        runtime = _load(owner, version, ctx)
        ds, path = ctx.datasets.file(ctx.tenant, spec.dataset)
        feed, kept = _inputs(spec, ds.format, path, runtime.metadata())
        rows = len(next(iter(feed.values())))
        chunks = max(1, math.ceil(rows / spec.chunk_size))
        done = {int(m["chunk"]): str(m["part"]) for m in ctx.job.metrics if "part" in m}
        label = _label(ctx.tenant, owner, ref)
        ctx.log(
            f"{label} -> v{version.version}: {rows} rows in {chunks} chunk(s), {len(done)} done"
        )
        work = ctx.work_dir()
        for k in range(chunks):
            if k in done:
                continue
            if ctx.should_stop():
                raise Cancelled
            lo, hi = k * spec.chunk_size, min(rows, (k + 1) * spec.chunk_size)
            out = runtime.predict({name: arr[lo:hi] for name, arr in feed.items()})
            part = work / f"part-{k:06d}.jsonl"
            _write_jsonl(part, lo, kept.iloc[lo:hi] if kept is not None else None, out)
            done[k] = ctx.put_file(part)
            part.unlink()
            ctx.store.report(
                ctx.job.id, progress=len(done) / chunks, message=f"chunk {k + 1}/{chunks}",
                metrics={"chunk": k, "rows": hi - lo, "part": done[k]},
            )  # fmt: skip
        output = _join(ctx, [done[k] for k in range(chunks)], spec.output_format, work)
        sha = ctx.put_file(output)
        size = output.stat().st_size
        output.unlink()
        return {
            "model": _label(ctx.tenant, owner, version.model), "version": version.version,
            "rows": rows,
            "output": {"sha256": sha, "size": size, "format": spec.output_format},
        }  # fmt: skip


def _nothing_shared(grantee: str, kind: str, owner: str, name: str) -> bool:
    return False


def _load(owner: str, version: Version, ctx: JobContext) -> Any:
    _, blob = ctx.registry.artifact_path(owner, parse_ref(f"{version.model}@{version.version}"))
    a = version.artifact
    folder = materialize(blob, a.sha256, a.packaging, a.filename,
                         ctx.settings.data_dir.resolve() / "cache" / "artifacts")  # fmt: skip
    model = ctx.registry.store.get_model(owner, version.model)  # its owner's trust decides
    options = RuntimeOptions(
        task=model.task,
        signature=version.signature if version.signature.inputs else None,
        trusted=model.trusted,
    )
    return runtime_class(version.format).load(folder, options)


def _inputs(
    spec: BatchPredictSpec, fmt: str, path: Path, sig: Any
) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    from modelplane.datasets.loader import load_dataset

    names = [t.name for t in sig.inputs]
    name = spec.input or (names[0] if len(names) == 1 else None)
    dtypes = {t.name: t.dtype for t in sig.inputs}
    data = load_dataset(path, fmt, scale=True)
    if isinstance(data, pd.DataFrame):
        if name is None:
            raise InvalidInput(f"input: the model takes several inputs {names}; name one")
        cols = spec.features or [c for c in data.columns if c not in spec.keep and
                                 pd.api.types.is_numeric_dtype(data[c])]  # fmt: skip
        dtype = dtypes.get(name, "float32")
        if dtype == "string":
            arr = data[cols[0]].astype(str).to_numpy(dtype=object)
        else:
            arr = data[cols].to_numpy(dtype=np.dtype(dtype if dtype != "unknown" else "float32"))
        return {name: arr}, data[spec.keep] if spec.keep else None
    if isinstance(data, dict):
        wanted = names or list(data)
        missing = [n for n in wanted if n not in data]
        if missing:
            raise InvalidInput(f"the npz dataset has no array(s) {missing} for the model's inputs")
        return {n: data[n] for n in wanted}, None
    if name is None:
        raise InvalidInput(f"input: the model takes several inputs {names}; name one")
    return {name: data.X.astype(np.float32)}, None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _write_jsonl(
    path: Path, start: int, kept: pd.DataFrame | None, out: dict[str, np.ndarray]
) -> None:
    n = len(next(iter(out.values()))) if out else 0
    records = kept.to_dict("records") if kept is not None else [{} for _ in range(n)]
    with open(path, "w") as fh:
        for i in range(n):
            row = {"row": start + i, **records[i]}
            row.update({k: _jsonable(v[i]) for k, v in out.items()})
            fh.write(json.dumps(row, default=_jsonable) + "\n")


def _join(ctx: JobContext, parts: list[str], fmt: str, work: Path) -> Path:
    target = work / f"output.{fmt}"
    if fmt == "jsonl":
        with open(target, "wb") as out:
            for sha in parts:
                out.write(ctx.registry.blobs.open_path(sha).read_bytes())
        return target
    frames = [pd.read_json(ctx.registry.blobs.open_path(sha), lines=True) for sha in parts]
    pd.concat(frames, ignore_index=True).to_parquet(target, index=False)
    return target


KIND = BatchPredict()
