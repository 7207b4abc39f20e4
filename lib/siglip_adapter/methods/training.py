"""The one training loop of the kit's trained methods (the trainable adapter, Tip-Adapter-F,
CLIP-Adapter, CoOp): full batch, AdamW, a cosine schedule, early stopping, learning rate and epoch
chosen on validation."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, Grid, NonNegative
from .registry import MethodParams


class Training(MethodParams):
    """The parameters of every trained method: the learning rates tried, the epochs, early stopping, weight decay."""

    lr: Grid
    epochs: Count
    patience: Optional[Count]
    weight_decay: NonNegative


@dataclass
class TrainResult:
    model: nn.Module
    lr: float
    epoch: int
    val_accuracy: float
    history: list[dict] = field(default_factory=list)  # every validation check of every lr: lr, epoch, loss, val_accuracy


def _val_acc(model, val_images, val_labels) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(val_images).argmax(-1) == val_labels).float().mean())


def fit_on_shots(make_model, shot_images, shot_labels, val_images, val_labels, lrs, epochs: int, weight_decay: float = 0.01,
                 eval_every: int = 1, seed: int = 0, patience: int | None = None) -> TrainResult:
    """The one training loop of the kit's trained methods: for each learning rate, a fresh
    ``make_model()`` trained on the shots with cross-entropy (full batch, AdamW, learning rate
    annealed to zero over ``epochs`` on a cosine, seeded); keep the (lr, epoch) with the best
    validation accuracy (epoch 0 = the untrained start; ties go to the earlier one). A run stops
    early after ``patience`` validation checks without a gain over its own best. The result's
    ``history`` is the learning curve: the training loss and validation accuracy at every check."""
    best: TrainResult | None = None
    history: list[dict] = []
    for lr in lrs:
        torch.manual_seed(seed)
        model = make_model()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        acc = own_best = _val_acc(model, val_images, val_labels)
        stale = 0
        history.append({"lr": float(lr), "epoch": 0, "loss": float("nan"), "val_accuracy": acc})
        if best is None or acc > best.val_accuracy:
            best = TrainResult(copy.deepcopy(model), float(lr), 0, acc)
        for epoch in range(1, epochs + 1):
            model.train()
            loss = F.cross_entropy(model(shot_images), shot_labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if epoch % eval_every == 0 or epoch == epochs:
                acc = _val_acc(model, val_images, val_labels)
                history.append({"lr": float(lr), "epoch": epoch, "loss": loss.item(), "val_accuracy": acc})
                if acc > best.val_accuracy:
                    best = TrainResult(copy.deepcopy(model), float(lr), epoch, acc)
                stale = 0 if acc > own_best else stale + 1
                own_best = max(own_best, acc)
                if patience is not None and stale >= patience:
                    break
    best.history = history
    return best
