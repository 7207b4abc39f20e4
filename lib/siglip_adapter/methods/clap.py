"""CLAP and ZS-LP (Silva-Rodríguez et al., CVPR 2024, "A Closer Look at the Few-Shot Adaptation of
Large Vision-Language Models"): a linear probe with CLIP's cosine classifier at CLIP's scale
(``100 x cos(f, w_c)``), its class weights started at the class prompts' features.

- ``zs_lp`` (their ``ZS`` initialisation, no constraint) trains the weights with cross-entropy;
- ``clap`` adds their class-adaptive constraint (``l2``): ``(1/N) sum_c lambda_c ||w_c - t_c||^2``,
  ``lambda_c`` the mean zero-shot probability (softmax of ``100 x cos``) of class c on its own
  shots, computed once before training.

Nothing is chosen on validation, the authors' point: fixed settings for every dataset and K
(their config ``SGD_lr1e-1_B256_ep300``): SGD (lr 0.1, momentum 0.9, no weight decay), batches
of 256 shuffled shot features, 300 epochs, the first at 1e-5 (Dassl's constant warm-up), then a
cosine over 300 epochs stepped once per epoch; the last epoch is the model. An epoch is as many
batches as the shot images fill (Dassl's train loader: ``n // 256``, at least one), drawn from all
the shots' features in an order drawn as theirs (``rand(n).argsort()``, a NumPy generator seeded
with the task's seed) (``jusiro/CLAP`` ``trainers/adapters.py``: ``TrainerXCostume.run_epoch``).
The scale is CLIP's as CLIP keeps it (``exp`` of its float32 ``ln 100``), applied after the
cosines, as theirs: 300 epochs at lr 0.1 amplify the last bit.

Where the kit differs, by its inputs: the authors' class weights start at CLIP's un-normalised text
features and the shots are 20 augmented views each; the kit's class prompts and shots are its
stored, L2-normalised features (one view). ``tests/test_parity.py`` checks both against the
authors' own trainer on recorded features."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, NonNegative, Positive
from .loop import CLIP_SCALE, Fitted, Task
from .registry import MethodParams, method
from .training import warmup_cosine_lr


class Params(MethodParams):
    lr: Positive  # SGD's learning rate after the warm-up epoch
    epochs: Count
    batch_size: Count
    momentum: NonNegative
    warmup_lr: Positive  # the first epoch's learning rate


CLIP_LOGIT_SCALE = torch.tensor(math.log(CLIP_SCALE)).exp()  # CLIP's scale as CLIP keeps it: exp of its ln 100, float32 (100.0000076)


def cosine_logits(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``100 x cos``, in the authors' order of operations (cosines, then CLIP's float32 scale)."""
    return (F.normalize(images, dim=-1) @ F.normalize(weights, dim=-1).T) * CLIP_LOGIT_SCALE


def class_multipliers(images: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor, n_classes: int) -> torch.Tensor:
    """CLAP's ``lambda_c``: the mean zero-shot probability (softmax of ``100 x cos``) of class c on its shots."""
    onehot = F.one_hot(labels, n_classes).float()
    with torch.no_grad():
        return torch.diag(torch.softmax(cosine_logits(images, class_text), -1).T @ onehot) / onehot.sum(0)


def epoch_lr(params: dict, epoch: int) -> float:
    return warmup_cosine_lr(params["lr"], params["warmup_lr"], params["epochs"], epoch)


def train_probe(task: Task, params: dict, constrained: bool) -> tuple[torch.Tensor, list[dict]]:
    """The class weights after the authors' schedule, and the training loss per epoch."""
    s, text = task.shots, task.class_text
    weights = nn.Parameter(text.clone())
    multipliers = class_multipliers(s.images, s.labels, text, task.n_classes) if constrained else None
    opt = torch.optim.SGD([weights], lr=epoch_lr(params, 0), momentum=params["momentum"])
    rng = np.random.RandomState(task.seed)  # each epoch's order drawn as the authors' run_epoch draws it: rand(n).argsort()
    n, size = len(s.labels), int(params["batch_size"])
    batches = max(1, n // size)  # the shot images' loader: full batches, or one short one
    history = []
    for epoch in range(params["epochs"]):
        for group in opt.param_groups:
            group["lr"] = epoch_lr(params, epoch)
        order = torch.from_numpy(rng.rand(n).argsort(axis=0))
        for b in range(batches):
            idx = order[b * size:(b + 1) * size]
            loss = F.cross_entropy(cosine_logits(s.images[idx], weights), s.labels[idx])
            if constrained:
                loss = loss + torch.mean(multipliers * (weights - text).pow(2).sum(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append({"lr": epoch_lr(params, epoch), "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": float("nan")})
    return weights.detach().clone(), history


def score(state, chosen, images):
    return cosine_logits(images, state["weights"])


def _fit(name: str, task: Task, params: dict, constrained: bool) -> Fitted:
    weights, history = train_probe(task, params, constrained)
    return Fitted(name, {"weights": weights}, {"epoch": params["epochs"]}, history=history, selected_on="none", candidates=1)


NO_VALIDATION = "none: the authors' fixed settings, last epoch"


@method("zs_lp", params=Params, score=score, label="ZS-LP", kind="trained", order=26, search=NO_VALIDATION)
def fit_zs_lp(task: Task, params: dict) -> Fitted:
    return _fit("zs_lp", task, params, constrained=False)


@method("clap", params=Params, score=score, label="CLAP", kind="trained", order=27, search=NO_VALIDATION)
def fit_clap(task: Task, params: dict) -> Fitted:
    return _fit("clap", task, params, constrained=True)
