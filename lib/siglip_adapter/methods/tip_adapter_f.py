"""Tip-Adapter-F (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for
Few-shot Classification"): Tip-Adapter's cache with its keys (the shots' image features) made
learnable and fine-tuned on the shots, the one-hot values fixed.

``tip_adapter_f`` follows the authors' ``run_tip_adapter_F`` (gaopengcuhk/Tip-Adapter, ``main.py``):
the keys as a bias-free linear layer started at the shots' features, AdamW (``lr``, eps 1e-4,
torch's default weight decay), a cosine over every step, batches of 256 shuffled shots for
``epochs`` epochs, cross-entropy on ``100 f W + init_alpha exp(-init_beta (1 - f K^T)) Y`` (their
config's initial values); after each epoch the accuracy at those values picks the epoch (the
first best), then sharpness and residual weight are searched again with the trained keys exactly
as ``tip_adapter`` searches (``search_hp``; its parameters: ``methods.tip_adapter``, this method's
``start``), and the test split is scored once.

Where the authors differ and the kit does not follow: they pick the epoch on the TEST split and
report the larger of that test accuracy and the one after the search; the kit picks on the
protocol's validation set. Their features and keys are float16 on the GPU and each epoch sees
fresh augmented views of the shots. ``tests/test_parity.py`` checks ``tip_adapter_f`` against
the authors' own function on recorded features, its epoch chosen on validation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, Positive
from .cache import score_cache
from .loop import CLIP_SCALE, NO_VALIDATION, Fitted, Task, more
from .registry import MethodParams, method
from .tip_adapter import search as search_hp
from .training import shuffled_batches


class Params(MethodParams):
    lr: Positive  # AdamW's, annealed on a cosine over every step
    eps: Positive
    epochs: Count
    batch_size: Count


def tip_logits(images: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, class_text: torch.Tensor, beta: float, alpha: float):
    """The authors' logits in their unit: ``100 f W + alpha exp(-beta (1 - f K^T)) Y``."""
    affinity = images @ keys.t()
    return CLIP_SCALE * images @ class_text.t() + ((-1) * (beta - beta * affinity)).exp() @ values * alpha


@method("tip_adapter_f", params=Params, score=score_cache, label="Tip-Adapter-F", kind="trained", order=40, start="tip_adapter",
        search="epoch at fixed values, then authors' grid (search_hp)")
def fit(task: Task, params: dict) -> Fitted:
    s, val, text = task.shots, task.val, task.class_text
    values = F.one_hot(s.labels, task.n_classes).float()
    torch.manual_seed(task.seed)
    adapter = nn.Linear(s.images.shape[1], len(s.labels), bias=False)
    adapter.weight = nn.Parameter(s.images.clone())
    size = int(params["batch_size"])
    opt = torch.optim.AdamW(adapter.parameters(), lr=params["lr"], eps=params["eps"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"] * math.ceil(len(s.labels) / size))
    beta0, alpha0 = params["start"]["init_beta"], params["start"]["init_alpha"]  # their config's, as Tip-Adapter's
    top, kept, history = 0.0, (0, s.images.clone()), []
    for epoch in range(params["epochs"]):
        for idx in shuffled_batches(len(s.labels), size):  # their loader's batches
            images, labels = s.images[idx], s.labels[idx]
            images = images / images.norm(dim=-1, keepdim=True)  # as their loop normalises each batch's features
            loss = F.cross_entropy(tip_logits(images, adapter.weight, values, text, beta0, alpha0), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acc = float((tip_logits(val.images, adapter.weight, values, text, beta0, alpha0).argmax(-1) == val.labels).float().mean())
        history.append({"lr": float(params["lr"]), "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": acc})
        if acc > top or not task.has_validation:  # no validation (support_only): the last epoch
            top, kept = acc, (epoch + 1, adapter.weight.detach().clone())
    epoch, keys = kept
    searched = search_hp("tip_adapter_f", task, params["start"], keys)
    return Fitted("tip_adapter_f", searched.state, {**searched.chosen, "epoch": epoch}, searched.val_accuracy, history,
                  candidates=more(searched.candidates, len(history)),
                  search=None if task.has_validation else f"{NO_VALIDATION}: the last epoch at the config's initial values")
