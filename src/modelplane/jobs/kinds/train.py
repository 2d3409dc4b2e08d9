"""``train`` and ``federated_train``: a training spec in, a registered model version out.

Shaped like SageMaker's CreateTrainingJob: a dataset, a model (an architecture
with its sizes), hyperparameters, resources, and where the result goes. The
result is a new version (ONNX for serving, the torch checkpoint and the input
encoding beside it) whose lineage records the job, the dataset's hash, the
parameters, the validation metrics and, when given, the base version.

With ``base: "name@ref"`` (a ``transformers`` version) the job fine-tunes that
encoder with a new classification head on ``data.text_field`` -> ``data.target``
instead (see ``kinds/finetune.py``) and registers a ``transformers`` folder.
With ``model.architecture: causal_lm`` it trains (or, with ``base``, fine-tunes)
a text-generation model instead (see ``kinds/causal_lm.py``).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelplane.errors import InvalidInput, NotFound
from modelplane.jobs.context import JobContext
from modelplane.jobs.kinds import Cancelled, SubmitEnv
from modelplane.registry.names import check_alias, check_name
from modelplane.registry.service import VersionMeta
from modelplane.training import DataSpec, Federated, Hyper, ModelSpec, TrainSpec, check_columns


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(default=1, ge=1, le=8, description="data-parallel processes (gloo)")


class AliasWhen(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    min: float | None = None
    max: float | None = None


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="registered model name (created if missing)")
    alias: str | None = None
    alias_when: AliasWhen | None = None
    description: str = ""


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    base: str | None = Field(
        default=None,
        description='fine-tune this version ("name@3", "name@alias"; format transformers)',
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    hyper: Hyper = Field(default_factory=Hyper)
    data: DataSpec = Field(default_factory=DataSpec)
    resources: Resources = Field(default_factory=Resources)
    output: Output

    @model_validator(mode="after")
    def _adamw_for_causal_lm(self) -> TrainJob:
        # Language models train with AdamW unless the spec picks another optimizer.
        chosen = "optimizer" in self.hyper.model_fields_set
        if self.model.architecture == "causal_lm" and not chosen:
            self.hyper.optimizer = "adamw"
        return self

    def train_spec(self) -> TrainSpec:
        return TrainSpec(model=self.model, hyper=self.hyper, data=self.data,
                         workers=self.resources.workers)  # fmt: skip


class FederatedJob(TrainJob):
    """Participants: one dataset split by a column, or several datasets; data is never pooled."""

    dataset: str = ""
    datasets: list[str] = Field(default_factory=list, max_length=64)
    partition_by: str | None = None
    federated: Federated = Field(default_factory=Federated)

    def train_spec(self) -> TrainSpec:
        return TrainSpec(
            model=self.model, hyper=self.hyper, data=self.data, federated=self.federated
        )

    def sources(self) -> list[str]:
        return [self.dataset] if self.dataset else self.datasets


def _columns(ds: Any) -> dict[str, str]:
    if ds.format == "images":
        return {"image": "uint8", "label": "str"}
    return {c.name: c.dtype for c in ds.schema_.columns}


def _causal_lm_only(spec: TrainJob) -> None:
    """Fields only the causal_lm architecture reads are refused elsewhere, not ignored."""
    if spec.hyper.max_steps is not None:
        raise InvalidInput("hyper.max_steps: only architecture 'causal_lm' counts steps")
    if spec.data.assistant_only_loss:
        raise InvalidInput("data.assistant_only_loss: only for architecture 'causal_lm'")
    if "family" in spec.model.model_fields_set:
        raise InvalidInput("model.family: only for architecture 'causal_lm'")


def _check_common(spec: TrainJob, env: SubmitEnv, datasets: list[str]) -> None:
    if spec.resources.workers > env.settings.max_job_workers:
        raise InvalidInput(f"resources.workers: at most {env.settings.max_job_workers} here")
    check_name(spec.output.model, "output.model")
    if spec.output.alias is not None:
        check_alias(spec.output.alias)
    for name in datasets:
        ds = env.datasets.store.get(env.tenant, name)  # 404 if not this tenant's
        try:
            check_columns(spec.train_spec(), _columns(ds))
        except ValueError as exc:
            raise InvalidInput(f"dataset {name!r}: {exc}") from exc


def _table(ctx: JobContext, name: str) -> tuple[Any, str]:
    from modelplane.datasets.loader import ImageData, load_dataset

    ds, path = ctx.datasets.file(ctx.tenant, name)
    data = load_dataset(path, ds.format)
    if isinstance(data, ImageData):
        data = {"image": data.X, "label": np.asarray(data.classes)[data.y]}
    return data, ds.sha256


def _resume(ctx: JobContext) -> dict[str, Any] | None:
    state = ctx.resume_state()
    if state is not None:
        done = int(state.get("round", state.get("epoch", 0)))
        ctx.store.reset_metrics(ctx.job.id, keep=done)
        ctx.log(f"resuming from the checkpoint of epoch/round {done}")
    return state


def _register(
    ctx: JobContext, spec: TrainJob, result: Any, sources: dict[str, str]
) -> dict[str, Any]:
    from modelplane.training.export import export_onnx, save_checkpoint

    if result.stop_reason == "cancelled":
        raise Cancelled
    work = ctx.work_dir() / "artifact"
    sig = export_onnx(result, work / "model.onnx")
    save_checkpoint({"model": result.model.state_dict(), "spec": spec.model_dump(mode="json")},
                    work / "checkpoint.pt")  # fmt: skip
    (work / "encoding.json").write_text(json.dumps(result.encoding.to_dict(), default=str))
    metrics = finite(result.metrics)
    meta = VersionMeta(
        format="onnx", packaging="tar", metrics=metrics, description=spec.output.description,
        params=spec.model_dump(mode="json", exclude={"output"}),
        source={"job_id": ctx.job.id, "kind": ctx.job.kind, "datasets": sources,
                "epochs_run": result.epochs_run, "stop_reason": result.stop_reason},
    )  # fmt: skip
    out = publish(ctx, spec.output, work, meta, result.encoding.task)
    out["max_export_error"] = sig.get("max_abs_diff")
    return out


def finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def publish(
    ctx: JobContext, output: Output, folder: Path, meta: VersionMeta, task: str
) -> dict[str, Any]:
    """Tar ``folder``, register it as a new version of ``output.model`` (created with ``task``
    if missing) and move ``output.alias`` to it when ``output.alias_when`` passes."""
    tar = ctx.work_dir() / "artifact.tar"
    with tarfile.open(tar, "w") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    store, name = ctx.registry.store, output.model
    try:
        store.get_model(ctx.tenant, name)
    except NotFound:
        store.create_model(ctx.tenant, name, output.description, task, {"trained": "true"})
    writer = ctx.registry.new_writer()
    with open(tar, "rb") as fh:
        while chunk := fh.read(1 << 20):
            writer.write(chunk)
    version = ctx.registry.finish_upload(
        ctx.tenant, name, writer, "model.tar", meta, ctx.job.created_by
    )
    tar.unlink()
    metrics = meta.metrics
    out: dict[str, Any] = {"model": name, "version": version.version, "metrics": metrics}
    alias, when = output.alias, output.alias_when
    if alias:
        value = metrics.get(when.metric) if when else None
        passes = when is None or (
            value is not None
            and (when.min is None or value >= when.min)
            and (when.max is None or value <= when.max)
        )
        if passes:
            ctx.registry.set_alias(ctx.tenant, name, alias, version.version, ctx.job.created_by)
            out["alias"] = alias
        else:
            ctx.log(
                f"alias {alias!r} not set: {when.metric if when else ''}={value} misses the bar"
            )
    ctx.log(f"registered {name}@{version.version} with {metrics}")
    return out


class Train:
    spec = TrainJob

    def check(self, spec: TrainJob, env: SubmitEnv) -> None:
        if spec.model.architecture == "causal_lm":
            from modelplane.jobs.kinds.causal_lm import check_causal_lm_job

            check_causal_lm_job(spec, env)
            return
        _causal_lm_only(spec)
        if spec.base is not None:
            from modelplane.jobs.kinds.finetune import check_finetune

            check_finetune(spec, env)
            return
        _check_common(spec, env, [spec.dataset])

    def run(self, spec: TrainJob, ctx: JobContext) -> dict[str, Any]:
        if spec.model.architecture == "causal_lm":
            from modelplane.jobs.kinds.causal_lm import run_causal_lm

            return run_causal_lm(spec, ctx)
        if spec.base is not None:
            from modelplane.jobs.kinds.finetune import run_finetune

            return run_finetune(spec, ctx)
        from modelplane.training import prepare
        from modelplane.training.distributed import run_training

        table, sha = _table(ctx, spec.dataset)
        data = prepare(spec.train_spec(), table)
        ctx.log(f"{data.n_train} training rows; {spec.resources.workers} worker(s)")
        result = run_training(spec.train_spec(), data, ctx, resume=_resume(ctx))
        return _register(ctx, spec, result, {spec.dataset: sha})


class FederatedTrain:
    spec = FederatedJob

    def check(self, spec: FederatedJob, env: SubmitEnv) -> None:
        if spec.base is not None:
            raise InvalidInput("base: federated_train does not fine-tune; use kind 'train'")
        if spec.model.architecture == "causal_lm":
            raise InvalidInput("model.architecture: federated_train does not train 'causal_lm'")
        _causal_lm_only(spec)
        if bool(spec.dataset) == bool(spec.datasets):
            raise InvalidInput("give 'dataset' (with partition_by) or 'datasets', not both")
        if spec.dataset and not spec.partition_by:
            raise InvalidInput("partition_by: required with a single dataset")
        _check_common(spec, env, spec.sources())
        if spec.partition_by:
            ds = env.datasets.store.get(env.tenant, spec.dataset)
            if spec.partition_by not in _columns(ds):
                raise InvalidInput(
                    f"partition_by: dataset {spec.dataset!r} has no column {spec.partition_by!r}"
                )

    def run(self, spec: FederatedJob, ctx: JobContext) -> dict[str, Any]:
        from modelplane.training import prepare_federated
        from modelplane.training.federated import federated_train

        tables, sources = [], {}
        for name in spec.sources():
            table, sources[name] = _table(ctx, name)
            tables.append(table)
        if spec.partition_by:
            frame = tables[0]
            keys = np.asarray(frame[spec.partition_by])
            tables = [
                frame[keys == k].drop(columns=[spec.partition_by])
                for k in sorted(set(keys.tolist()))
            ]
        parts = prepare_federated(spec.train_spec(), tables)
        ctx.log(f"{len(parts)} participants with {[p.n_train for p in parts]} training rows")
        result = federated_train(spec.train_spec(), parts, spec.federated.rounds,
                                 spec.federated.local_epochs, ctx, resume=_resume(ctx))  # fmt: skip
        return _register(ctx, spec, result, sources)


TRAIN = Train()
FEDERATED = FederatedTrain()
