"""Optimisers and per-step learning-rate schedules (warm-up, cosine, multistep at epoch boundaries)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import UserInputError
from .config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW; biases and norm weights are not decayed unless asked."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 and not cfg.decay_all_params else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise UserInputError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def lr_factor(cfg: TrainConfig) -> Callable[[float], float]:
    """Multiplier of the peak lr as a function of the (fractional) epoch."""
    if cfg.sched not in ("cosine", "multistep", "constant"):
        raise UserInputError(f"unknown schedule {cfg.sched!r}; choose cosine, multistep or constant")
    warm, total = cfg.warmup_epochs, float(cfg.epochs)

    def factor(epoch: float) -> float:
        if epoch < warm:
            return (epoch + 1e-8) / warm
        if cfg.sched == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - warm) / max(total - warm, 1e-8))))
        if cfg.sched == "multistep":
            return cfg.gamma ** sum(1 for m in cfg.milestones if math.floor(epoch + 1e-9) >= m)
        return 1.0
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step."""
    factor = lr_factor(cfg)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step / steps_per_epoch))
