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


class Trajectory:
    """One learning rate's training run of ``fit_on_shots`` on one cell's shots, kept on disk (a
    safetensors file, never a pickle; ``SharedFits.trajectory`` names it by what the run reads): the loss of every epoch and the trained parameters at every validation check. The run
    reads no validation image, so the protocols that share the shots (corrected, realistic,
    support_only) train once: each replays the stored run against its own validation images, with
    the same choice and early stopping as a run trained there (``fit_on_shots``). The run that
    stores it trains to the last epoch whatever its own early stopping decided."""

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)

    def load(self) -> tuple[list[float], dict[int, dict[str, torch.Tensor]]] | None:
        """(losses by epoch from 1, {epoch: {parameter: tensor}}), or None if absent or unreadable."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not self.path.is_file():
            return None
        try:
            tensors = load_file(self.path)
            losses = tensors.pop("loss").tolist()
        except (OSError, SafetensorError, KeyError):
            return None
        states: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            epoch, param = name.split("/", 1)
            states.setdefault(int(epoch), {})[param] = value
        return losses, states

    def save(self, losses: list[float], states: dict[int, dict[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        from ..atomic import write_atomic

        tensors = {f"{epoch}/{name}": t.detach().cpu().contiguous() for epoch, state in states.items() for name, t in state.items()}
        tensors["loss"] = torch.tensor(losses, dtype=torch.float64)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda tmp: save_file(tensors, str(tmp)))


def _trained(model, shots: Labelled, lr: float, schedule: Schedule):
    """Full-batch AdamW steps on the shots under a cosine to zero: yields (epoch, loss) after each,
    ``model`` holding that epoch's parameters."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=schedule.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, schedule.epochs)
    for epoch in range(1, schedule.epochs + 1):
        model.train()
        loss = F.cross_entropy(model(shots.images), shots.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        yield epoch, loss.item()


def _recorded(steps, model, checks: set[int], losses: list[float], states: dict):
    """``steps`` passed through, its losses and the trainable parameters at ``checks`` kept."""
    for epoch, loss in steps:
        losses.append(loss)
        if epoch in checks:
            states[epoch] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        yield epoch, loss


def _replayed(model, losses: list[float], states: dict):
    """A stored run's steps: ``model`` takes the stored parameters at each epoch that has them."""
    for epoch, loss in enumerate(losses, 1):
        if epoch in states:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in states[epoch].items():
                    params[name].copy_(value)
        yield epoch, loss


def fit_on_shots(make_model, shots: Labelled, val: Labelled, schedule: Schedule, seed: int = 0, trajectory=None) -> TrainResult:
    """The one training loop of the kit's trained methods: for each learning rate, a fresh
    ``make_model()`` trained on the shots with cross-entropy (full batch, AdamW, learning rate
    annealed to zero over ``epochs`` on a cosine, seeded); keep the (lr, epoch) with the best
    validation accuracy (epoch 0 = the untrained start; ties go to the earlier one). A run stops
    early after ``patience`` validation checks without a gain over its own best. The result's
    ``history`` is the learning curve: the training loss and validation accuracy at every check.
    With no validation image (support_only) nothing can be chosen: the first learning rate, trained
    to the last epoch. ``trajectory``: lr -> ``Trajectory`` (or None): each learning rate's run read
    from it where stored, else trained and stored (to the last epoch), so that protocols sharing
    the shots train once; the result is the same as without it."""
    best: TrainResult | None = None
    history: list[dict] = []
    epochs, patience = schedule.epochs, schedule.patience
    checks = {e for e in range(1, epochs + 1) if e % schedule.eval_every == 0 or e == epochs}
    checked = len(val.labels) > 0
    for lr in schedule.lrs if checked else schedule.lrs[:1]:
        torch.manual_seed(seed)
        model = make_model()
        kept = trajectory(lr) if trajectory is not None else None
        stored = kept.load() if kept is not None else None
        if stored is not None:
            steps = _replayed(model, *stored)
        else:
            steps = _trained(model, shots, lr, schedule)
            if kept is not None:
                losses, states = [], {}
                steps = _recorded(steps, model, checks, losses, states)
        if checked:
            acc = own_best = _val_acc(model, val.images, val.labels)
            stale = 0
            history.append({"lr": float(lr), "epoch": 0, "loss": float("nan"), "val_accuracy": acc})
            if best is None or acc > best.val_accuracy:
                best = TrainResult(copy.deepcopy(model), float(lr), 0, acc)
        for epoch, loss in steps:
            if not checked:  # no validation: nothing to check, the last epoch is kept
                history.append({"lr": float(lr), "epoch": epoch, "loss": loss, "val_accuracy": float("nan")})
            elif epoch in checks:
                acc = _val_acc(model, val.images, val.labels)
                history.append({"lr": float(lr), "epoch": epoch, "loss": loss, "val_accuracy": acc})
                if acc > best.val_accuracy:
                    best = TrainResult(copy.deepcopy(model), float(lr), epoch, acc)
                stale = 0 if acc > own_best else stale + 1
                own_best = max(own_best, acc)
                if patience is not None and stale >= patience:
                    break
        if kept is not None and stored is None:
            for _ in steps:  # the rest of the run, for the protocols that stop later
                pass
            kept.save(losses, states)
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
