"""Optimizers, learning-rate schedules and the L1/L2 penalties.

L2 (``hyper.l2`` = λ) is each optimizer's ``weight_decay`` on weights (tensors
of 2+ dims; biases and the standardisation buffers are left alone). For sgd,
momentum, adagrad, rmsprop and adam that adds λ·w to the gradient, i.e. the
penalty λ/2·‖w‖²; for adamw it is *decoupled* weight decay (w ← w - lr·λ·w,
outside Adam's moment estimates), as in Loshchilov & Hutter. L1
(``hyper.l1`` = λ) adds λ·Σ|w| over the same weights to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from modelplane.training.spec import Hyper


def weights(model: nn.Module) -> Iterable[Tensor]:
    """The parameters that regularisation applies to: weights, not biases."""
    return (p for p in model.parameters() if p.ndim >= 2)


def make_optimizer(hyper: Hyper, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": hyper.l2}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr, name = hyper.learning_rate, hyper.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=hyper.momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def lr_factor(hyper: Hyper, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate for epoch ``e`` (0-based) of ``total``."""

    def factor(e: int) -> float:
        if hyper.schedule == "step":
            return float(hyper.gamma ** (e // hyper.step_size))
        if hyper.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(e, total) / total))
        if hyper.schedule == "linear_warmup" and e < hyper.warmup_epochs:
            return (e + 1) / (hyper.warmup_epochs + 1)
        return 1.0

    return factor


def make_scheduler(
    hyper: Hyper, optimizer: torch.optim.Optimizer, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch; its state_dict is plain data (the lambda itself is not saved)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(hyper, total))


def l1_penalty(model: nn.Module) -> Tensor:
    return torch.stack([p.abs().sum() for p in weights(model)]).sum()
