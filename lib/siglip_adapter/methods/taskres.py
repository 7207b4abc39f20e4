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

from ..schema import Positive
from .clap import CLIP_LOGIT_SCALE
from .loop import Fitted, Task
from .registry import method
from .training import DasslSchedule, dassl_epochs, epochs_at


class Params(DasslSchedule):  # Adam
    alpha: Positive  # the residual's scale


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
    opt = torch.optim.Adam([residual], lr=params["lr"], weight_decay=params["weight_decay"])
    history = dassl_epochs(opt, lambda images, labels: F.cross_entropy(logits_of(images, classifier(base, residual, params["alpha"])), labels),
                           s, epochs, params["lr"], params["warmup_lr"], int(params["batch_size"]))
    weights = classifier(base, residual.detach(), params["alpha"]).clone()
    return Fitted("taskres", {"weights": weights}, {"epoch": epochs}, history=history, selected_on="none", candidates=1)
