"""GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based
Adaptation"): Gaussian discriminant analysis on the shots' image features, i.e. class means and
one covariance shared by the classes, gives a linear classifier ``W_k = P mu_k``,
``b_k = -1/2 mu_k P mu_k`` (equal priors) with ``P`` the estimated precision, whose logits are
added to zero-shot with a fusion weight ``alpha`` searched on validation.

N*K shots cannot estimate a D x D covariance, so it is shrunk. ``gda`` is the authors' method as
their code (mrflogs/ICLR24, main_few_shots.py ``run``) computes it: ``P = D pinv((n-1) S + tr(S) I)``
with ``S`` the covariance of the n class-centred shot features, and their fusion grid
(``methods.gda.alpha``), in their unit: ``alpha`` weighs GDA's logits against zero-shot logits of
``100 x cosine`` (CLIP's scale), which the kit rescales to the run's logit form. ``gda_lw`` is the
kit's earlier deviation, a row of its own: the Ledoit-Wolf shrinkage (scikit-learn) and its
own grid. With one shot per class nothing varies and both are zero-shot.

Where the authors differ and the kit does not follow: their code averages each shot's features
over augmented views, and on ImageNet it sets the validation features to the test features (the
weight chosen on test); the kit searches on the protocol's validation set only.
``tests/test_parity.py`` checks ``gda`` against the authors' own ``run`` on recorded features."""

from __future__ import annotations

from typing import Literal

import torch

from ..schema import WeightGrid
from .loop import Fitted, Task, best, peer_unit, zero_shot_of, zero_shot_state
from .registry import MethodParams, method


class Params(MethodParams):
    alpha: WeightGrid  # GDA's weight against 100 x cosine zero-shot logits (the authors' unit), searched on val


Estimator = Literal["authors", "ledoit_wolf"]


def shared_precision(centred: torch.Tensor, estimator: Estimator) -> torch.Tensor:
    """(D, D) precision of the class-centred features (n, D), float64."""
    if estimator == "authors":  # main_few_shots.py: D * pinv((n - 1) S + tr(S) I)
        n, d = centred.shape
        s = torch.cov(centred.T)
        return d * torch.linalg.pinv((n - 1) * s + torch.trace(s) * torch.eye(d, dtype=s.dtype), hermitian=True)
    from sklearn.covariance import ledoit_wolf

    shrunk = torch.from_numpy(ledoit_wolf(centred.numpy(), assume_centered=True)[0])
    try:  # shrinkage towards a scaled identity makes it invertible ...
        return torch.linalg.inv(shrunk)
    except torch.linalg.LinAlgError:  # ... unless nothing varies (one shot per class): the pseudo-inverse, as scikit-learn's
        return torch.linalg.pinv(shrunk, hermitian=True)


def gda_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int, estimator: Estimator = "authors"):
    """(W (N, D), b (N,)) from the shots: class means and the shared precision (``shared_precision``)."""
    x = images.double()
    means = torch.stack([x[labels == k].mean(0) for k in range(n_classes)])
    w = means @ shared_precision(x - means[labels], estimator)
    return w, -0.5 * (w * means).sum(-1)


def _gda(state, images):
    return (images.double() @ state["gda_weight"].T + state["gda_bias"]).float()


def score(state, chosen, images):
    return zero_shot_of(state, images) + chosen["alpha"] * (peer_unit(state["scale"]) * _gda(state, images))


def _fit(name: str, task: Task, params: dict, estimator: Estimator) -> Fitted:
    w, b = gda_classifier(task.shots.images, task.shots.labels, task.n_classes, estimator)
    state = {**zero_shot_state(task), "gda_weight": w, "gda_bias": b}
    zs_val, gda_val = task.zero_shot(task.val.images), peer_unit(task.scale) * _gda(state, task.val.images)
    acc = lambda a: float(((zs_val + a * gda_val).argmax(-1) == task.val.labels).float().mean())  # noqa: E731
    alpha, val = best(params["alpha"], acc)
    return Fitted(name, state, {"alpha": float(alpha)}, val, candidates=len(params["alpha"]))


@method("gda", params=Params, score=score, label="GDA", kind="training-free", order=60, search="authors' grid")
def fit(task: Task, params: dict) -> Fitted:
    return _fit("gda", task, params, "authors")


@method("gda_lw", params=Params, score=score, label="GDA (Ledoit-Wolf)", kind="training-free", order=61, search="kit's grid")
def fit_ledoit_wolf(task: Task, params: dict) -> Fitted:
    return _fit("gda_lw", task, params, "ledoit_wolf")
