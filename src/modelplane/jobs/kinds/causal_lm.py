"""``train`` with ``model.architecture: causal_lm``: a text-generation model out of a text dataset.

From scratch (a GPT-2 or Llama sized by the spec, with a byte-level BPE trained
on the data) or, with ``base: "name@ref"``, fine-tuning a ``transformers``
version that holds a Hugging Face causal LM::

    kind: train
    dataset: stories                 # JSONL of {"text": ...} or {"messages": [{role, content}]}
    model: {architecture: causal_lm, family: gpt2, layers: 2, heads: 2, d_model: 64,
            max_len: 64, vocab_size: 512}
    data: {validation_split: 0.1, assistant_only_loss: false}
    hyper: {epochs: 20, max_steps: 2000, batch_size: 16, learning_rate: 3e-3,
            schedule: cosine}       # optimizer: adamw unless given
    output: {model: stories-lm, alias: production, alias_when: {metric: perplexity, max: 5}}

With a base only ``model.architecture`` and ``model.max_len`` (a truncation
length within the base's context) apply. The result is a ``transformers``
version (config.json, model.safetensors, generation_config.json, tokenizer files
with the chat template) on a model of task ``text-generation``, with lineage:
the job, the dataset's hash, the parameters, val_loss / perplexity, and the base
as parent.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from modelplane.errors import InvalidInput, NotFound
from modelplane.jobs.context import JobContext
from modelplane.jobs.kinds import Cancelled, SubmitEnv
from modelplane.registry.names import check_alias, check_name, parse_ref
from modelplane.registry.service import VersionMeta
from modelplane.schemas.registry import Version
from modelplane.storage.archives import normalize_member
from modelplane.training.spec import check_causal_lm

TASK = "text-generation"
BASE_MODEL_FIELDS = ("architecture", "max_len")
WEIGHTS = (".safetensors", ".bin")
MAX_CONFIG_BYTES = 1 << 20
MAX_LEN = 4096  # ModelSpec.max_len's bound
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len")


def is_causal_lm(config: dict[str, Any]) -> bool:
    """A Hugging Face config whose architecture has a language-modelling head."""
    names = config.get("architectures") or []
    return any(str(n).endswith(("ForCausalLM", "LMHeadModel")) for n in names)


def base_config(env: SubmitEnv, version: Version) -> dict[str, Any]:
    """The base's top-level ``config.json``, read from its archive without unpacking it."""
    a = version.artifact
    found = sorted(
        (n for n in a.files if Path(n).name == "config.json"), key=lambda n: n.count("/")
    )
    if not found or a.files[found[0]] > MAX_CONFIG_BYTES:
        return {}
    raw: bytes | None = None
    with env.registry.blobs.open(a.sha256) as fh:
        if a.packaging == "zip":
            with zipfile.ZipFile(fh) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and normalize_member(info.filename) == found[0]:
                        raw = zf.read(info)
                        break
        else:
            with tarfile.open(fileobj=fh, mode="r:*") as tf:
                for member in tf:
                    if member.isfile() and normalize_member(member.name) == found[0]:
                        data = tf.extractfile(member)
                        raw = data.read() if data is not None else None
                        break
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _check_base(spec: Any, env: SubmitEnv) -> None:
    unused = sorted(set(spec.model.model_fields_set) - set(BASE_MODEL_FIELDS))
    if unused:
        raise InvalidInput(
            f"model.{unused[0]}: not used when fine-tuning a base causal LM "
            "(the base is the network; only model.max_len applies)"
        )
    base = env.registry.store.get_version(env.tenant, parse_ref(spec.base))  # 404 if unknown
    where = f"base: {base.model}@{base.version}"
    if base.format != "transformers":
        raise InvalidInput(f"{where} is format {base.format!r}; a causal LM is 'transformers'")
    if not any(f.endswith(WEIGHTS) for f in base.artifact.files):
        raise InvalidInput(f"{where} holds no torch weights (model.safetensors) to fine-tune")
    config = base_config(env, base)
    if not is_causal_lm(config):
        have = config.get("architectures") or config.get("model_type") or "no architectures"
        raise InvalidInput(f"{where} is not a causal language model (config.json: {have})")
    context = next((config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int)), None)
    if "max_len" not in spec.model.model_fields_set:
        # Unset, the truncation length is the base's context; the stored spec says what ran.
        spec.model.max_len = min(context or MAX_LEN, MAX_LEN)
    elif context and spec.model.max_len > context:
        raise InvalidInput(f"model.max_len: {where} has a context of {context} tokens")


def check_causal_lm_job(spec: Any, env: SubmitEnv) -> None:
    """Refuse at submit what a causal-LM run could not do (404 unknown, 422 naming the field)."""
    if spec.resources.workers != 1:
        raise InvalidInput("resources.workers: a causal LM trains in one process")
    try:
        check_causal_lm(spec.model, spec.hyper, spec.data)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    check_name(spec.output.model, "output.model")
    if spec.output.alias is not None:
        check_alias(spec.output.alias)
    if spec.base is not None:
        _check_base(spec, env)
    ds = env.datasets.store.get(env.tenant, spec.dataset)  # 404 if not this tenant's
    columns = (
        {c.name for c in ds.schema_.columns} if ds.format in ("jsonl", "csv", "parquet") else set()
    )
    field = spec.data.text_field
    if field is not None and field not in columns:
        raise InvalidInput(f"data.text_field: dataset {spec.dataset!r} has no column {field!r}")
    if field is None and not {"text", "messages"} & columns:
        raise InvalidInput(
            f"dataset: {spec.dataset!r} has neither a 'text' nor a 'messages' column "
            '(JSONL of {"text": ...} or {"messages": [...]})'
        )
    chat = field is None and "messages" in columns
    if spec.data.assistant_only_loss and not chat:
        raise InvalidInput("data.assistant_only_loss: needs a dataset of chat 'messages'")
    rows = ds.schema_.rows
    if rows is not None and rows < 2:
        raise InvalidInput(f"dataset: {spec.dataset!r} has {rows} row(s); at least 2 are needed")
    try:
        existing = env.registry.store.get_model(env.tenant, spec.output.model)
    except NotFound:
        return
    if existing.task and existing.task != TASK:
        raise InvalidInput(
            f"output.model: {spec.output.model!r} has task {existing.task!r}; "
            f"a causal LM is {TASK!r}"
        )


def run_causal_lm(spec: Any, ctx: JobContext) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from modelplane.jobs.kinds.finetune import _base_folder
    from modelplane.jobs.kinds.train import _resume, _table, finite, publish
    from modelplane.training.causal_lm import save_causal_lm, train_causal_lm
    from modelplane.training.lm_data import read_corpus

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the job's own process
    state = _resume(ctx)
    folder, base_ref, info = None, None, {}
    if spec.base is not None:
        # A resumed run keeps the base version it started from, wherever the alias points now.
        ref = str(state["base"]) if state is not None and "base" in state else spec.base
        base = ctx.registry.store.get_version(ctx.tenant, parse_ref(ref))
        base_ref = f"{base.model}@{base.version}"
        folder, info = _base_folder(ctx, base), {"base": base_ref}
    table, sha = _table(ctx, spec.dataset)
    corpus = read_corpus(spec.data, spec.hyper, table)
    what = f"fine-tuning {base_ref}" if base_ref else f"training a new {spec.model.family}"
    ctx.log(f"{what}: {len(corpus.train)} training {'chats' if corpus.chat else 'texts'}")
    result = train_causal_lm(corpus, spec.model, spec.hyper, spec.data, ctx,
                             base=folder, resume=state, info=info)  # fmt: skip
    if result.stop_reason == "cancelled":
        raise Cancelled
    work = save_causal_lm(result, ctx.work_dir() / "artifact")
    meta = VersionMeta(
        format="transformers", packaging="tar", metrics=finite(result.metrics),
        parents=[base_ref] if base_ref else [], description=spec.output.description,
        params=spec.model_dump(mode="json", exclude={"output"}),
        source={"job_id": ctx.job.id, "kind": ctx.job.kind, "base": base_ref,
                "datasets": {spec.dataset: sha}, "epochs_run": result.epochs_run,
                "steps": result.steps, "chat": result.chat, "stop_reason": result.stop_reason},
    )  # fmt: skip
    return publish(ctx, spec.output, work, meta, TASK)
