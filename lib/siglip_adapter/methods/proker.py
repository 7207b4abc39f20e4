"""ProKeR (Bendou et al., CVPR 2025, "ProKeR: A Kernel Perspective on Few-Shot Adaptation of Large
Vision-Language Models"): kernel ridge regression of what zero-shot gets wrong on the shots. With
``K(x, y) = exp(-beta (1 - x . y))`` on L2-normalised features, S the shots, Y their one-hot
labels and ``z(x) = x . T_class`` the zero-shot cosines (scale 1: ProKeR's residual is fitted
against plain cosines, not CLIP's 100 x cosine),

    a = solve(K(S, S) / lambda + I, Y - z(S)),    logits(x) = z(x) + K(x, S) a,

with (beta, lambda) searched on validation. ``proker`` is the authors' training-free ProKeR as
their code computes it (``trainers/proker.py::ProKeR`` of omarnust/BReg-Adapter, a mirror of the
authors' repository with their history): float32 throughout, each grid ``torch.linspace(start,
stop, steps)`` with both ends included, beta outer and lambda inner, the first best kept. Their
configs (RN50 only) give each dataset its ranges; the kit's default is the one four of their
eleven datasets share (Caltech101, FGVC, Food-101, UCF101: beta [0.5, 3] x 20, lambda
[0.001, 1] x 10, 200 candidates), and a dataset file may set its own. The run's logit form scales
the whole of ``z + K a`` (argmax unchanged).

Where the authors differ and the kit does not follow: every augmented view of a shot is its own
support point in their cache (10 views); on ImageNet they choose on test or reuse fixed values.
``tests/test_parity.py`` checks ``proker`` against the authors' own function on recorded features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from typing import Annotated

from pydantic import Field

from ..schema import Count, Positive, Triple
from .loop import NO_VALIDATION, Fitted, Task, zero_shot_state
from .registry import MethodParams, method


class Params(MethodParams):
    beta: Triple  # [start, stop, steps] of torch.linspace: the kernel's sharpness
    lmbda: Triple  # [start, stop, steps]: the ridge's lambda (larger: less shrinkage)
    fixed: dict[Count, Annotated[list[Positive], Field(min_length=2, max_length=2)]]  # K -> [beta, lmbda] where no validation image
                                                                                       # exists (their fixed values; a K not listed: the nearest below)


def linspace(triple) -> torch.Tensor:
    """The authors' grid: ``torch.linspace(start, stop, steps)`` in float32, both ends included."""
    start, stop, steps = triple
    if int(steps) != steps or steps < 1:
        raise ValueError(f"proker: a grid's steps must be a whole number >= 1, got {steps}")
    return torch.linspace(float(start), float(stop), int(steps))


def kernel(x: torch.Tensor, y: torch.Tensor, beta) -> torch.Tensor:
    """``exp(-beta (1 - x . y))`` -> (len(x), len(y)), float32."""
    return (-beta * (1 - x.float() @ y.float().T)).exp()


def residual_weights(support: torch.Tensor, targets: torch.Tensor, beta, lmbda) -> torch.Tensor:
    """``solve(K(S, S) / lambda + I, targets)``: the ridge's dual weights (len(S), N)."""
    eye = torch.eye(support.shape[0], dtype=torch.float32)
    return torch.linalg.solve(1 / lmbda * kernel(support, support, beta) + eye, targets)


def _cosines(images: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
    return images.float() @ class_text.float().T


def score(state, chosen, images):
    z = _cosines(images, state["class_text"]) + kernel(images, state["support"], chosen["beta"]) @ state["weights"]
    return float(state["scale"]) * z + float(state["bias"])


@method("proker", params=Params, score=score, label="ProKeR", kind="training-free", order=65, search="authors' grid (linspace)")
def fit(task: Task, params: dict) -> Fitted:
    s, val = task.shots, task.val
    residual = F.one_hot(s.labels, task.n_classes).float() - _cosines(s.images, task.class_text)
    z_val = _cosines(val.images, task.class_text)
    if not task.has_validation:  # support_only: the authors' values for a run without validation (their 'imagenet' selection)
        listed = sorted(params["fixed"])
        beta, lmbda = (torch.tensor(v, dtype=torch.float32) for v in params["fixed"][max([x for x in listed if x <= len(s.labels) // task.n_classes],
                                                                                         default=listed[0])])
        state = {**zero_shot_state(task), "support": s.images.float(), "weights": residual_weights(s.images, residual, beta, lmbda)}
        return Fitted("proker", state, {"beta": float(beta), "lmbda": float(lmbda)}, search=f"{NO_VALIDATION}: the authors' values per K",
                      candidates=1)
    betas, lmbdas = linspace(params["beta"]), linspace(params["lmbda"])
    top, choice = -1.0, None
    for beta in betas:
        k_val = kernel(val.images, s.images, beta)
        for lmbda in lmbdas:
            acc = float(((z_val + k_val @ residual_weights(s.images, residual, beta, lmbda)).argmax(-1) == val.labels).float().mean())
            if acc > top:
                top, choice = acc, (beta, lmbda)
    beta, lmbda = choice
    state = {**zero_shot_state(task), "support": s.images.float(), "weights": residual_weights(s.images, residual, beta, lmbda)}
    return Fitted("proker", state, {"beta": float(beta), "lmbda": float(lmbda)}, top, candidates=len(betas) * len(lmbdas))
