"""LP++ (Huang et al., CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP"): a
linear probe whose logits add the zero-shot cosines with a learned weight per class,

    logits(x) = x W^T + b + alpha * (x T_class^T),

trained on the shots by full-batch gradient descent with step sizes from the data, no search.
``lp_pp`` follows the authors' ``LinearProbe_P2`` (FereshteShakeri/FewShot-CLIP-Strong-Baseline,
``methods/linear_probe_p2.py``):

- W starts at each class's *sum* of shot features, b at ``nn.Linear``'s default (seeded with the
  task's seed), alpha at ``250 x`` the mean over classes of the class's shots' mean cosine to its prompt;
- W and b take SGD steps (momentum 0.9) of ``4 n / lambda_max(F^T F)`` (n shots, F their
  features); alpha takes a plain step of ``n / (4 max_c sum_i (f_i . t_c)^2)`` every 10 epochs
  along its gradient summed over every epoch so far (the authors never reset it);
- ``epochs`` (300) full-batch epochs of cross-entropy; the model kept is the one of the last
  epoch with the best validation accuracy (``>=``: a later epoch wins a tie), so
  ``candidates`` is the epoch count.

The authors' validation is K labelled images per class of the validation split; the kit's is the
protocol's. Their CLIP runs in float16 on the GPU and each shot's feature is one augmented view;
here float32 and the shots' own features. ``tests/test_parity.py`` checks ``lp_pp`` against the
authors' own ``LinearProbe_P2.forward`` on recorded features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.linalg import eigh
from torch import nn

from ..schema import Count
from .loop import NO_VALIDATION, Fitted, Task
from .registry import MethodParams, method


class Params(MethodParams):
    epochs: Count  # full-batch epochs (the authors': 300); the epoch is chosen on validation


ALPHA_EVERY = 10  # epochs between the zero-shot weight's steps
ALPHA_INIT = 250.0  # the zero-shot weight's start: this times the shots' mean class-mean cosine


def step_sizes(features: torch.Tensor, class_text: torch.Tensor) -> tuple[float, float]:
    """(the probe's step ``4 n / lambda_max(F^T F)``, the zero-shot weight's ``n / (4 max_c sum_i (f_i . t_c)^2)``)."""
    n = features.shape[0]
    top = max(eigh((features.T @ features).numpy())[0])
    return (4 * n) / top, n / (max(((features @ class_text.T) ** 2).sum(0)) * 4)


def initial_alpha(features: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``250 x`` the mean over classes of the mean cosine of a class's shots to its own prompt
    (float64, in the authors' order of operations: ``(250 / K) (K m)``)."""
    onehot = F.one_hot(labels, n_classes).float()
    own = (onehot * (features @ class_text.T) / onehot.sum(0, keepdim=True)).sum(0)  # (N,): class c's shots to prompt c
    k = features.shape[0] // n_classes
    return torch.mean(ALPHA_INIT / k * (own.double() * k))


def score(state, chosen, images):
    return images @ state["weight"].T + state["bias"] + state["alpha"] * (images @ state["class_text"].T)


@method("lp_pp", params=Params, score=score, label="LP++", kind="trained", order=25, search="epoch on validation (authors' steps)")
def fit(task: Task, params: dict) -> Fitted:
    s, val, text = task.shots, task.val, task.class_text
    n_classes = task.n_classes
    torch.manual_seed(task.seed)
    probe = nn.Linear(s.images.shape[1], n_classes, bias=True)
    probe.weight.data = F.one_hot(s.labels, n_classes).float().T @ s.images  # each class's sum of shot features
    lr_w, lr_alpha = step_sizes(s.images, text)
    alpha = (initial_alpha(s.images, s.labels, text, n_classes) * torch.ones(1, n_classes)).requires_grad_(True)
    opt = torch.optim.SGD(probe.parameters(), lr_w, momentum=0.9)
    text_logits, val_text_logits = s.images @ text.T, val.images @ text.T
    top, kept, history = 0.0, None, []
    for epoch in range(params["epochs"]):
        loss = F.cross_entropy(probe(s.images) + alpha * text_logits, s.labels)
        opt.zero_grad()
        loss.backward()  # alpha's gradient is summed over every epoch (as the authors': never reset)
        opt.step()
        if (epoch + 1) % ALPHA_EVERY == 0:
            alpha.data -= lr_alpha * alpha.grad.data
        with torch.no_grad():
            acc = float(((probe(val.images) + alpha * val_text_logits).argmax(-1) == val.labels).float().mean())
        history.append({"lr": float("nan"), "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": acc})  # lr: none given, its own steps
        if acc >= top or not task.has_validation:  # no validation (support_only): the last epoch
            top = acc
            kept = {"weight": probe.weight.detach().clone(), "bias": probe.bias.detach().clone(), "alpha": alpha.detach()[0].clone(),
                    "epoch": epoch + 1}
    epoch = kept.pop("epoch")
    if not task.has_validation:
        return Fitted("lp_pp", {**kept, "class_text": text}, {"epoch": epoch}, history=history, search=f"{NO_VALIDATION}: the last epoch",
                      candidates=1)
    return Fitted("lp_pp", {**kept, "class_text": text}, {"epoch": epoch}, top, history, candidates=len(history))
