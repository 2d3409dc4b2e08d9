"""What a training job asks for, checked when the job is submitted.

Every bound lives here so that a bad value is a 422 naming its field before any
worker starts. Checks that need the dataset (does the column exist?) are in
``data.check_columns``; checks that need the data's values (how many classes?)
run when the data is prepared.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Architecture = Literal["mlp", "cnn", "rnn", "transformer", "autoencoder", "causal_lm"]
Task = Literal["classification", "regression", "reconstruction"]
Loss = Literal["cross_entropy", "mse", "mae", "bce"]

Width = Annotated[int, Field(ge=1, le=8192)]
Channels = Annotated[int, Field(ge=1, le=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The network. Fields an architecture does not use are ignored by it."""

    architecture: Architecture = "mlp"
    hidden: list[Width] = Field(default=[64, 64], min_length=1, max_length=16)
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # cnn: one conv-relu-maxpool block per entry; ``hidden[-1]`` is the dense layer after them
    channels: list[Channels] = Field(default=[16, 32], min_length=1, max_length=8)
    kernel_size: int = Field(default=3, ge=1, le=11)
    # images are checked to be image_size x image_size (a loader resizes archives to it); None: any
    image_size: int | None = Field(default=None, ge=1, le=4096)
    # rnn and transformer depth
    cell: Literal["lstm", "gru"] = "lstm"
    layers: int = Field(default=1, ge=1, le=24)
    # transformer (text): vocabulary is built from the training texts, at most vocab_size tokens
    # causal_lm: a byte-level BPE of at most vocab_size tokens is trained on the texts; layers,
    # heads, d_model make a GPT-2 or Llama (``family``) whose context is max_len tokens
    family: Literal["gpt2", "llama"] = "gpt2"
    heads: int = Field(default=2, ge=1, le=64)
    d_model: int = Field(default=32, ge=4, le=4096)
    vocab_size: int = Field(default=5000, ge=4, le=1_000_000)
    max_len: int = Field(default=64, ge=1, le=4096)
    # autoencoder bottleneck; encoder is ``hidden``, decoder is ``hidden`` reversed
    latent: int = Field(default=8, ge=1, le=8192)

    @model_validator(mode="after")
    def _heads_divide_d_model(self) -> ModelSpec:
        if self.architecture in ("transformer", "causal_lm") and self.d_model % self.heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.heads ({self.heads})"
            )
        return self


class Hyper(_Strict):
    """Optimisation. ``l2`` is the weight-decay λ; ``l1`` adds λ·Σ|w| (weights, not biases)."""

    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    schedule: Literal["constant", "step", "cosine", "linear_warmup"] = "constant"
    step_size: int = Field(default=10, ge=1, le=10_000)  # epochs between step decays
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)  # step decay factor
    warmup_epochs: int = Field(default=1, ge=0, le=10_000)  # linear_warmup
    optimizer: Literal["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    l1: float = Field(default=0.0, ge=0.0, le=10.0)
    l2: float = Field(default=0.0, ge=0.0, le=10.0)
    loss: Loss | None = None  # None: cross_entropy for classification, mse otherwise
    max_runtime_seconds: float | None = Field(default=None, gt=0.0)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=10_000)
    checkpoint_every: int = Field(default=1, ge=1, le=10_000)  # epochs between checkpoints
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)  # causal_lm: optimizer steps
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class DataSpec(_Strict):
    """Which columns (or arrays) feed the model, and how the data is split."""

    target: str | None = None
    features: list[str] | None = Field(default=None, min_length=1)  # None: other numeric ones
    text_field: str | None = None  # transformer: a column of strings
    image_field: str | None = None  # cnn: array [N, H, W], [N, C, H, W] or [N, H, W, C]
    sequence_field: str | None = None  # rnn: array [N, T, F] or [N, T]
    validation_split: float = Field(default=0.2, gt=0.0, lt=1.0)
    task: Task | None = None  # None: inferred from the target's values
    max_classes: int = Field(default=50, ge=2, le=100_000)  # integer targets up to this: classes
    assistant_only_loss: bool = False  # causal_lm on chat ``messages``: loss on replies only


class Federated(_Strict):
    """Federated averaging rounds, when the job trains over several participants' datasets."""

    rounds: int = Field(default=10, ge=1, le=10_000)
    local_epochs: int = Field(default=1, ge=1, le=1_000)


# The input each architecture reads; mlp and autoencoder read ``features`` or a flattened image.
INPUT_FIELD: dict[str, str] = {
    "cnn": "image_field",
    "rnn": "sequence_field",
    "transformer": "text_field",
}


class TrainSpec(_Strict):
    model: ModelSpec = Field(default_factory=ModelSpec)
    hyper: Hyper = Field(default_factory=Hyper)
    data: DataSpec = Field(default_factory=DataSpec)
    workers: int = Field(default=1, ge=1, le=8)  # data-parallel processes (gloo)
    federated: Federated | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        arch, data, loss = self.model.architecture, self.data, self.hyper.loss
        if arch == "causal_lm":
            check_causal_lm(self.model, self.hyper, data)
            return self
        needed = INPUT_FIELD.get(arch)
        if needed and getattr(data, needed) is None:
            raise ValueError(f"data.{needed} is required for architecture {arch!r}")
        for field in INPUT_FIELD.values():
            usable = field == needed or (field == "image_field" and needed is None)
            if getattr(data, field) is not None and not usable:
                raise ValueError(f"data.{field} is not used by architecture {arch!r}")
        if arch == "autoencoder":
            if data.task not in (None, "reconstruction"):
                raise ValueError("data.task must be 'reconstruction' for an autoencoder")
            if loss in ("cross_entropy", "bce"):
                raise ValueError(f"hyper.loss {loss!r} does not fit an autoencoder")
        else:
            if data.target is None:
                raise ValueError(f"data.target is required for architecture {arch!r}")
            if data.task == "reconstruction":
                raise ValueError("data.task 'reconstruction' needs architecture 'autoencoder'")
        if data.task is not None:
            check_loss(loss, data.task)
        return self

    @property
    def task(self) -> Task | None:
        """The task when the spec fixes it; None means it is inferred from the target."""
        return "reconstruction" if self.model.architecture == "autoencoder" else self.data.task


CAUSAL_LM_MIN_VOCAB = 260  # byte-level BPE: the 256 bytes, then special tokens and merges


def check_causal_lm(model: ModelSpec, hyper: Hyper, data: DataSpec) -> None:
    """A causal LM reads texts (or chat messages) and predicts the next token: nothing else."""
    for name in ("target", "features", "image_field", "sequence_field", "task"):
        if getattr(data, name) is not None:
            raise ValueError(f"data.{name} is not used by architecture 'causal_lm'")
    if hyper.loss not in (None, "cross_entropy"):
        raise ValueError("hyper.loss: a causal LM is trained with cross_entropy")
    if model.vocab_size < CAUSAL_LM_MIN_VOCAB:
        raise ValueError(
            f"model.vocab_size must be at least {CAUSAL_LM_MIN_VOCAB} for architecture "
            "'causal_lm' (a byte-level BPE starts from 256 bytes plus special tokens)"
        )


def check_loss(loss: Loss | None, task: Task) -> Loss:
    """The loss to use for ``task``; ValueError when the requested one does not fit."""
    if loss is None:
        return "cross_entropy" if task == "classification" else "mse"
    classifying = loss in ("cross_entropy", "bce")
    if classifying != (task == "classification"):
        raise ValueError(f"hyper.loss {loss!r} does not fit task {task!r}")
    return loss
