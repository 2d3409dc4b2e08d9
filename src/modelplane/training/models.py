"""The model families. Each takes *raw* inputs and gives logits or raw-scale values.

Standardisation (with NaN -> training mean) is the first layer and, for
regression and reconstruction, de-standardisation the last, both as fixed
buffers: the exported model needs no preprocessing beyond the text tokenizer.
The loop computes regression losses in standardised units (see
``loop.Objective``) so that targets of any scale train alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modelplane.training.data import Encoding
from modelplane.training.spec import ModelSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class Standardize(nn.Module):
    """(x - mean) / std, with missing values (NaN) taken as the mean."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(*shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(*shape))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.where(torch.isnan(x), self.mean, x)
        return (x - self.mean) / self.std


class Rescale(nn.Module):
    """y * std + mean: standardised outputs back to the target's units."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1))

    def forward(self, y: Tensor) -> Tensor:
        return y * self.std + self.mean


def _dense(sizes: Sequence[int], spec: ModelSpec, last_activation: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout:
                layers.append(nn.Dropout(spec.dropout))
    return layers


def _tail(enc: Encoding) -> list[nn.Module]:
    return [Rescale(enc.y_mean, enc.y_std)] if enc.task != "classification" else []


def mlp(spec: ModelSpec, enc: Encoding) -> nn.Module:
    f = enc.input_shape[0]
    body = _dense([f, *spec.hidden, enc.n_outputs], spec, last_activation=False)
    return nn.Sequential(Standardize(enc.mean, enc.std, [1, f]), *body, *_tail(enc))


class AutoEncoder(nn.Module):
    """Encoder ``hidden`` -> ``latent`` -> decoder ``hidden`` reversed -> the features again."""

    def __init__(self, spec: ModelSpec, enc: Encoding) -> None:
        super().__init__()
        f = enc.input_shape[0]
        self.encoder = nn.Sequential(
            Standardize(enc.mean, enc.std, [1, f]),
            *_dense([f, *spec.hidden, spec.latent], spec, last_activation=False),
        )
        sizes = [spec.latent, *reversed(spec.hidden), f]
        self.decoder = nn.Sequential(*_dense(sizes, spec, last_activation=False), *_tail(enc))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.decoder(self.encoder(x))
        return out


def cnn(spec: ModelSpec, enc: Encoding) -> nn.Module:
    """conv-relu-maxpool blocks (pooling while the image is 2+ pixels wide) -> dense -> head."""
    c, h, w = enc.input_shape
    layers: list[nn.Module] = [Standardize(enc.mean, enc.std, [1, c, 1, 1])]
    for out_c in spec.channels:
        k = spec.kernel_size
        layers += [nn.Conv2d(c, out_c, k, padding=k // 2), nn.ReLU()]
        h, w, c = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1, out_c
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers.append(nn.Flatten())
    layers += _dense([c * h * w, spec.hidden[-1], enc.n_outputs], spec, last_activation=False)
    return nn.Sequential(*layers, *_tail(enc))


class RecurrentNet(nn.Module):
    """LSTM/GRU over [batch, time, features]; the last step's output -> head."""

    def __init__(self, spec: ModelSpec, enc: Encoding) -> None:
        super().__init__()
        f, size = enc.input_shape[1], spec.hidden[0]
        self.standardize = Standardize(enc.mean, enc.std, [1, 1, f])
        cell = nn.LSTM if spec.cell == "lstm" else nn.GRU
        drop = spec.dropout if spec.layers > 1 else 0.0
        self.rnn = cell(f, size, num_layers=spec.layers, batch_first=True, dropout=drop)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(size, enc.n_outputs))
        self.tail = nn.Sequential(*_tail(enc))

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.standardize(x))
        result: Tensor = self.tail(self.head(out[:, -1]))
        return result


class TextTransformer(nn.Module):
    """Token + learned position embeddings -> TransformerEncoder -> mean over tokens -> head."""

    def __init__(self, spec: ModelSpec, enc: Encoding) -> None:
        super().__init__()
        d = spec.d_model
        self.embed = nn.Embedding(len(enc.vocab), d, padding_idx=0)
        self.position = nn.Parameter(torch.randn(spec.max_len, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, spec.heads, dim_feedforward=spec.hidden[0], dropout=spec.dropout,
            activation=spec.activation if spec.activation != "tanh" else "relu", batch_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, enc.n_outputs)
        self.tail = nn.Sequential(*_tail(enc))

    def forward(self, ids: Tensor) -> Tensor:
        # padding is masked, except position 0 so that an empty text still attends to something
        first = torch.arange(ids.shape[1], device=ids.device) == 0
        pad = (ids == 0) & ~first
        h = self.encoder(self.embed(ids) + self.position[: ids.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1)
        result: Tensor = self.tail(self.head(pooled))
        return result


def build_model(spec: ModelSpec, enc: Encoding) -> nn.Module:
    arch = spec.architecture
    if arch == "autoencoder":
        return AutoEncoder(spec, enc)
    if arch == "cnn":
        return cnn(spec, enc)
    if arch == "rnn":
        return RecurrentNet(spec, enc)
    if arch == "transformer":
        return TextTransformer(spec, enc)
    return mlp(spec, enc)
