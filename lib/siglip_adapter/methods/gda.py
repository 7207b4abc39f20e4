"""GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based
Adaptation"): Gaussian discriminant analysis on the shots' image features, i.e. class means and
one covariance shared by the classes, gives a linear classifier ``W_k = S^-1 mu_k``,
``b_k = -1/2 mu_k S^-1 mu_k`` (equal priors), whose logits are added to zero-shot with a fusion
weight searched on validation (``methods.gda.weight``). N*K shots cannot estimate a D x D
covariance, so the shared covariance is shrunk towards a scaled identity with the Ledoit-Wolf
estimate (scikit-learn); with one shot per class nothing varies and GDA is zero-shot.

The published code (main_few_shots.py) shrinks with its own estimator, ``d * pinv((n-1) S +
tr(S) I)``, averages features over augmented views of the shots, and searches the weight on the
validation split, except on ImageNet, where it sets the validation features to the test
features: chosen on test. The kit uses Ledoit-Wolf, the shots as they are, and validation only."""

from __future__ import annotations

import torch

from ..schema import WeightGrid
from .loop import Fitted, Task, best, zero_shot_of, zero_shot_state
from .registry import MethodParams, method


class Params(MethodParams):
    weight: WeightGrid  # the fusion weights with zero-shot searched


def gda_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (N, D), b (N,)) from the shots: class means, Ledoit-Wolf precision of the centred features."""
    from sklearn.covariance import ledoit_wolf

    x = images.double()
    means = torch.stack([x[labels == k].mean(0) for k in range(n_classes)])
    shrunk, _ = ledoit_wolf((x - means[labels]).numpy(), assume_centered=True)
    shrunk = torch.from_numpy(shrunk)
    try:  # shrinkage towards a scaled identity makes it invertible ...
        precision = torch.linalg.inv(shrunk)
    except torch.linalg.LinAlgError:  # ... unless nothing varies (one shot per class): the pseudo-inverse, as scikit-learn's
        precision = torch.linalg.pinv(shrunk, hermitian=True)
    w = means @ precision
    return w, -0.5 * (w * means).sum(-1)


def _gda(state, images):
    return (images.double() @ state["gda_weight"].T + state["gda_bias"]).float()


def score(state, chosen, images):
    return zero_shot_of(state, images) + chosen["weight"] * _gda(state, images)


@method("gda", params=Params, score=score, label="GDA", kind="training-free", order=60)
def fit(task: Task, params: dict) -> Fitted:
    w, b = gda_classifier(task.shots.images, task.shots.labels, task.n_classes)
    state = {**zero_shot_state(task), "gda_weight": w, "gda_bias": b}
    zs_val, gda_val = task.zero_shot(task.val.images), _gda(state, task.val.images)
    acc = lambda a: float(((zs_val + a * gda_val).argmax(-1) == task.val.labels).float().mean())  # noqa: E731
    weight, val = best(params["weight"], acc)
    return Fitted("gda", state, {"weight": float(weight)}, val)
