"""The training loops: ``fit_on_shots``, the kit's own (the trainable adapter, CLIP-Adapter's
validated variant, CoOp: full batch, AdamW, a cosine schedule, early stopping, learning rate and
epoch chosen on validation), and ``dassl_epochs``, Dassl's epoch loop as the CoOp-family peers'
code configures it (TaskRes, CLIP-Adapter: shuffled mini-batches, a constant warm-up epoch, a
cosine per epoch, the last epoch kept)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, Grid, NonNegative, Positive
from .loop import Labelled
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


@dataclass(frozen=True)
class Schedule:
    """How a trained method trains: the learning rates tried, the epochs (one full-batch step
    each), AdamW's weight decay, the epochs between validation checks, and early stopping after
    ``patience`` checks without a gain (None: never)."""

    lrs: list[float]
    epochs: int
    weight_decay: float = 0.01
    eval_every: int = 1
    patience: int | None = None

    @classmethod
    def of(cls, params: dict) -> "Schedule":
        """A method's schedule from its parameters (``Training``; ``eval_every`` 1 where it has none)."""
        return cls(list(params["lr"]), params["epochs"], params["weight_decay"], params.get("eval_every", 1), params.get("patience"))


def fit_on_shots(make_model, shots: Labelled, val: Labelled, schedule: Schedule, seed: int = 0) -> TrainResult:
    """The one training loop of the kit's trained methods: for each learning rate, a fresh
    ``make_model()`` trained on the shots with cross-entropy (full batch, AdamW, learning rate
    annealed to zero over ``epochs`` on a cosine, seeded); keep the (lr, epoch) with the best
    validation accuracy (epoch 0 = the untrained start; ties go to the earlier one). A run stops
    early after ``patience`` validation checks without a gain over its own best. The result's
    ``history`` is the learning curve: the training loss and validation accuracy at every check.
    With no validation image (support_only) nothing can be chosen: the first learning rate, trained
    to the last epoch."""
    best: TrainResult | None = None
    history: list[dict] = []
    epochs, patience = schedule.epochs, schedule.patience
    checked = len(val.labels) > 0
    for lr in schedule.lrs if checked else schedule.lrs[:1]:
        torch.manual_seed(seed)
        model = make_model()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=schedule.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        if checked:
            acc = own_best = _val_acc(model, val.images, val.labels)
            stale = 0
            history.append({"lr": float(lr), "epoch": 0, "loss": float("nan"), "val_accuracy": acc})
            if best is None or acc > best.val_accuracy:
                best = TrainResult(copy.deepcopy(model), float(lr), 0, acc)
        for epoch in range(1, epochs + 1):
            model.train()
            loss = F.cross_entropy(model(shots.images), shots.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if not checked:  # no validation: nothing to check, the last epoch is kept
                history.append({"lr": float(lr), "epoch": epoch, "loss": loss.item(), "val_accuracy": float("nan")})
            elif epoch % schedule.eval_every == 0 or epoch == epochs:
                acc = _val_acc(model, val.images, val.labels)
                history.append({"lr": float(lr), "epoch": epoch, "loss": loss.item(), "val_accuracy": acc})
                if acc > best.val_accuracy:
                    best = TrainResult(copy.deepcopy(model), float(lr), epoch, acc)
                stale = 0 if acc > own_best else stale + 1
                own_best = max(own_best, acc)
                if patience is not None and stale >= patience:
                    break
        if not checked:
            model.eval()
            best = TrainResult(model, float(lr), epochs, float("nan"))
    best.history = history
    return best


def warmup_cosine_lr(lr: float, warmup_lr: float, epochs: int, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) under Dassl's constant warm-up over a cosine, as
    CoOp-family code (CLAP, TaskRes) configures it: ``warmup_lr`` for epoch 0, then ``lr``
    annealed over ``epochs`` from epoch 1 on (the cosine restarts its count after the warm-up)."""
    if epoch == 0:
        return float(warmup_lr)
    return 0.5 * lr * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def shuffled_batches(n: int, batch_size: int, drop_last: bool = False) -> list[torch.Tensor]:
    """The index batches of one pass of a shuffling torch ``DataLoader`` (no workers) over ``n``
    items, drawn from the global RNG as it draws them: its iterator's base seed, then its
    ``RandomSampler``'s seed for one ``randperm``; ``drop_last``: only full batches. The same batches
    as the peers' loaders, without indexing and collating one item at a time (on features, that
    cost more than the training steps)."""
    torch.empty((), dtype=torch.int64).random_()  # the iterator's base seed (it seeds workers; none here)
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    batches = list(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(batch_size))
    return batches[:-1] if drop_last and len(batches[-1]) < batch_size else batches


def dassl_epochs(opt: torch.optim.Optimizer, loss_of, shots: Labelled, epochs: int, lr: float, warmup_lr: float, batch_size: int) -> list[dict]:
    """Dassl's ``TrainerX`` epochs as the CoOp-family peers run them, on the shots' features: each
    epoch at ``warmup_cosine_lr``, its shots in shuffled batches of ``batch_size`` (``shuffled_batches``,
    full batches only once there are that many: Dassl's train loader), one ``opt`` step per batch on
    ``loss_of(images, labels)``. Returns the learning curve (no validation: the last epoch is the model)."""
    n = len(shots.labels)
    history = []
    for epoch in range(epochs):
        rate = warmup_cosine_lr(lr, warmup_lr, epochs, epoch)
        for group in opt.param_groups:
            group["lr"] = rate
        for idx in shuffled_batches(n, batch_size, drop_last=n >= batch_size):
            loss = loss_of(shots.images[idx], shots.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append({"lr": rate, "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": float("nan")})
    return history


class DasslSchedule(MethodParams):
    """The parameters of a peer trained with Dassl's loop (``dassl_epochs``)."""

    lr: Positive  # after the warm-up epoch
    weight_decay: NonNegative  # the optimiser's (L2) weight decay
    epochs: dict[Count, Count]  # K -> epochs; a K not listed takes the entry of the largest K below it
    batch_size: Count
    warmup_lr: Positive


def epochs_at(params: dict, k: int) -> int:
    """The epochs for K shots: the entry of the largest listed K at or below it (the smallest entry below every listed K)."""
    listed = sorted(params["epochs"])
    return int(params["epochs"][max([x for x in listed if x <= k], default=listed[0])])
