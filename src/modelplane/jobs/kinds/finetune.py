"""``train`` with ``base``: fine-tune a registered ``transformers`` version into a classifier.

The spec is the ``train`` kind's own (``TrainJob``) plus ``base: "name@ref"``::

    kind: train
    dataset: tickets                       # a table with a text column and a label column
    base: minilm@production                # format transformers, with torch weights
    model: {max_len: 64, dropout: 0.1}     # the only model fields fine-tuning reads
    data: {text_field: text, target: topic}
    hyper: {epochs: 3, batch_size: 16, learning_rate: 5e-5, optimizer: adamw}
    output: {model: ticket-topics, alias: production,
             alias_when: {metric: accuracy, min: 0.9}}

The run fine-tunes the base encoder and a new head (``training.finetune``),
then registers a ``transformers`` folder with ``model.onnx`` (task
``text-classification``: the ``transformers`` runtime serves it as is), the
encoder and head weights and the tokenizer, with lineage ``parents=[base]``
and ``source`` naming the job, the base and the dataset's hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelplane.errors import InvalidInput, NotFound
from modelplane.jobs.context import JobContext
from modelplane.jobs.kinds import Cancelled, SubmitEnv
from modelplane.jobs.kinds.train import TrainJob, _columns, _resume, _table, finite, publish
from modelplane.registry.names import check_alias, check_name, parse_ref
from modelplane.registry.service import VersionMeta
from modelplane.schemas.registry import Signature, TensorSpec, Version
from modelplane.storage.materialize import materialize

TASK = "text-classification"
MODEL_FIELDS = ("max_len", "dropout")  # of ``model``; the base is the architecture
WEIGHTS = (".safetensors", ".bin")


def check_finetune(spec: TrainJob, env: SubmitEnv) -> None:
    """Refuse at submit what the fine-tuning run could not do."""
    if spec.resources.workers != 1:
        raise InvalidInput("resources.workers: fine-tuning a base runs in one process")
    unused = sorted(set(spec.model.model_fields_set) - set(MODEL_FIELDS))
    if unused:
        raise InvalidInput(
            f"model.{unused[0]}: not used when fine-tuning a base "
            f"(the base is the architecture; only model.max_len and model.dropout apply)"
        )
    d = spec.data
    for name in ("features", "image_field", "sequence_field"):
        if getattr(d, name) is not None:
            raise InvalidInput(f"data.{name}: not used when fine-tuning a base (give text_field)")
    for name in ("text_field", "target"):
        if getattr(d, name) is None:
            raise InvalidInput(f"data.{name}: required to fine-tune a base")
    if d.task not in (None, "classification"):
        raise InvalidInput("data.task: fine-tuning a base trains a classifier")
    if spec.hyper.loss not in (None, "cross_entropy"):
        raise InvalidInput("hyper.loss: fine-tuning a base uses cross_entropy")
    check_name(spec.output.model, "output.model")
    if spec.output.alias is not None:
        check_alias(spec.output.alias)

    assert spec.base is not None
    base = env.registry.store.get_version(env.tenant, parse_ref(spec.base))  # 404 if unknown
    if base.format != "transformers":
        raise InvalidInput(
            f"base: {base.model}@{base.version} is format {base.format!r}; "
            "fine-tuning needs a 'transformers' version"
        )
    if base.artifact.files and not any(f.endswith(WEIGHTS) for f in base.artifact.files):
        raise InvalidInput(
            f"base: {base.model}@{base.version} holds no torch weights "
            "(model.safetensors or pytorch_model.bin) to fine-tune"
        )
    columns = _columns(env.datasets.store.get(env.tenant, spec.dataset))  # 404 if unknown
    for where in ("text_field", "target"):
        column = getattr(d, where)
        if column not in columns:
            have = ", ".join(sorted(columns)[:20])
            raise InvalidInput(
                f"data.{where}: column {column!r} is not in dataset {spec.dataset!r} (has: {have})"
            )
    try:
        existing = env.registry.store.get_model(env.tenant, spec.output.model)
    except NotFound:
        return
    if existing.task and existing.task != TASK:
        raise InvalidInput(
            f"output.model: {spec.output.model!r} has task {existing.task!r}; "
            f"a fine-tuned classifier is {TASK!r}"
        )


def _base_folder(ctx: JobContext, version: Version) -> Path:
    from modelplane.runtimes.text import model_root

    ref = parse_ref(f"{version.model}@{version.version}")
    _, blob = ctx.registry.artifact_path(ctx.tenant, ref)
    a = version.artifact
    folder = materialize(blob, a.sha256, a.packaging, a.filename,
                         ctx.settings.data_dir.resolve() / "cache" / "artifacts")  # fmt: skip
    return model_root(folder)


def signature(classes: list[str]) -> Signature:
    """What the ``transformers`` runtime serves for a text classifier."""
    return Signature(
        inputs=[TensorSpec(name="text", dtype="string", shape=[-1])],
        outputs=[
            TensorSpec(name="label", dtype="string", shape=[-1]),
            TensorSpec(name="probabilities", dtype="float32", shape=[-1, len(classes)]),
        ],
    )


def run_finetune(spec: TrainJob, ctx: JobContext) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from modelplane.runtimes.export import export_model_onnx
    from modelplane.training.finetune import finetune, prepare_texts, save_classifier

    assert spec.base is not None
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the job's own process
    state = _resume(ctx)
    # A resumed run keeps the base version it started from, wherever the alias points now.
    ref = str(state["base"]) if state is not None and "base" in state else spec.base
    base = ctx.registry.store.get_version(ctx.tenant, parse_ref(ref))
    base_ref = f"{base.model}@{base.version}"
    folder = _base_folder(ctx, base)
    table, sha = _table(ctx, spec.dataset)
    data = prepare_texts(spec.data, spec.hyper, table)
    ctx.log(f"fine-tuning {base_ref}: {data.n_train} training texts, {len(data.classes)} classes")
    result = finetune(
        folder, data, spec.hyper, ctx, max_len=spec.model.max_len,
        dropout=spec.model.dropout, resume=state, info={"base": base_ref},
    )  # fmt: skip
    if result.stop_reason == "cancelled":
        raise Cancelled
    work = save_classifier(result, ctx.work_dir() / "artifact")
    diff = export_model_onnx(result.model, result.tokenizer, work / "model.onnx", output="logits")
    metrics = finite(result.metrics)
    meta = VersionMeta(
        format="transformers", packaging="tar", metrics=metrics, parents=[base_ref],
        signature=signature(result.classes), description=spec.output.description,
        params=spec.model_dump(mode="json", exclude={"output"}),
        source={"job_id": ctx.job.id, "kind": ctx.job.kind, "base": base_ref,
                "datasets": {spec.dataset: sha}, "epochs_run": result.epochs_run,
                "stop_reason": result.stop_reason},
    )  # fmt: skip
    out = publish(ctx, spec.output, work, meta, TASK)
    out["max_export_error"] = diff
    return out
