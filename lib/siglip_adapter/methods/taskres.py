"""TaskRes (Yu et al., CVPR 2023, "Task Residual for Tuning Vision-Language Models"): the frozen
zero-shot classifier plus a learned residual, ``w_c = t_c + alpha x_c`` (x from zeros),
renormalised, at CLIP's scale: ``logits = 100 cos(f, t + alpha x)``.

``taskres`` follows the authors' ``TaskRes`` trainer (geekyutao/TaskRes, ``trainers/taskres.py``,
on Dassl) as their ``train_regular.sh`` runs it: Adam (lr 2e-3, Dassl's L2 weight decay 5e-4),
batches of 256 shots drawn by a shuffling torch ``DataLoader`` (full batches only once there are
256), one epoch at 1e-5 (Dassl's constant warm-up), then a cosine over the epochs stepped once per
epoch; 100 epochs up to 4 shots, 200 from 8; alpha 0.5 (Flowers: 1.0). Nothing is chosen on any
split: the last epoch is the model.

Where the kit differs, by its inputs: the authors' base classifier is CLIP's *un-normalised* text
features (alpha is relative to their norm) and each epoch sees a fresh augmented view of each shot;
the kit's class prompts and shots are its stored, L2-normalised features. ``tests/test_parity.py``
checks ``taskres`` against the authors' own trainer on recorded features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, NonNegative, Positive
from .clap import CLIP_LOGIT_SCALE
from .loop import Fitted, Task
from .registry import MethodParams, method
from .training import warmup_cosine_lr


class Params(MethodParams):
    alpha: Positive  # the residual's scale
    lr: Positive  # Adam's learning rate after the warm-up epoch
    weight_decay: NonNegative  # Adam's (L2) weight decay
    epochs: dict[Count, Count]  # K -> epochs; a K not listed takes the entry of the largest K below it
    batch_size: Count
    warmup_lr: Positive


def epochs_at(params: dict, k: int) -> int:
    """The epochs for K shots: the entry of the largest listed K at or below it (the smallest entry below every listed K)."""
    listed = sorted(params["epochs"])
    return int(params["epochs"][max([x for x in listed if x <= k], default=listed[0])])


def classifier(base: torch.Tensor, residual: torch.Tensor, alpha: float) -> torch.Tensor:
    return base + alpha * residual


def logits_of(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``100 x cos``, in the authors' order of operations (CLIP's float32 scale times the image features first)."""
    return CLIP_LOGIT_SCALE * F.normalize(images, dim=-1) @ F.normalize(weights, dim=-1).t()


def score(state, chosen, images):
    return logits_of(images, state["weights"])


@method("taskres", params=Params, score=score, label="TaskRes", kind="trained", order=28, search="none: the authors' fixed settings, last epoch")
def fit(task: Task, params: dict) -> Fitted:
    s, base = task.shots, task.class_text
    epochs = epochs_at(params, len(s.labels) // task.n_classes)
    torch.manual_seed(task.seed)
    residual = nn.Parameter(torch.zeros_like(base))
    opt = torch.optim.Adam([residual], lr=warmup_cosine_lr(params["lr"], params["warmup_lr"], epochs, 0),
                           weight_decay=params["weight_decay"])
    size = int(params["batch_size"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.images, s.labels), batch_size=size, shuffle=True,
                                         drop_last=len(s.labels) >= size)  # Dassl's train loader
    history = []
    for epoch in range(epochs):
        lr = warmup_cosine_lr(params["lr"], params["warmup_lr"], epochs, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        for images, labels in loader:
            loss = F.cross_entropy(logits_of(images, classifier(base, residual, params["alpha"])), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append({"lr": lr, "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": float("nan")})
    weights = classifier(base, residual.detach(), params["alpha"]).clone()
    return Fitted("taskres", {"weights": weights}, {"epoch": epochs}, history=history, selected_on="none", candidates=1)
