"""Linear probe: L2-regularised multinomial logistic regression on the shots' image features
(scikit-learn, lbfgs), CLIP's linear probe as CoOp runs it for few-shot (Zhou et al., IJCV 2022,
"Learning to Prompt for Vision-Language Models"): the inverse regularisation C is searched on the
protocol's validation set over ``methods.linear_probe.C``, as CLIP's and CoOp's linear probes
search it on a validation split. No zero-shot term."""

from __future__ import annotations

import torch

from ..schema import Grid
from .loop import Fitted, Task, best
from .registry import MethodParams, method


class Params(MethodParams):
    C: Grid  # the inverse regularisation strengths searched


def probe_state(task: Task, c: float, max_iter: int) -> dict[str, torch.Tensor]:
    """The fitted regression as one weight row and bias per class (N, D), (N,)."""
    from sklearn.linear_model import LogisticRegression

    x, y = task.shots.images.double().numpy(), task.shots.labels.numpy()
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=task.seed).fit(x, y)
    if len(model.classes_) != task.n_classes:
        raise ValueError(f"linear_probe: the shots hold {len(model.classes_)} of {task.n_classes} classes")
    coef, intercept = torch.from_numpy(model.coef_), torch.from_numpy(model.intercept_)
    if task.n_classes == 2:  # scikit-learn keeps one row for two classes: the second class's margin
        coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(intercept), intercept])
    return {"weight": coef.float().contiguous(), "bias": intercept.float().contiguous()}  # as saved, so a card scores alike


def score(state, chosen, images):
    return images @ state["weight"].T + state["bias"]


@method("linear_probe", params=Params, score=score, label="Linear probe", kind="training-free", order=20, search="C grid")
def fit(task: Task, params: dict) -> Fitted:
    max_iter = params.get("max_iter", 1000)
    states = {c: probe_state(task, float(c), max_iter) for c in params["C"]}
    acc = lambda c: float((score(states[c], {}, task.val.images).argmax(-1) == task.val.labels).float().mean())  # noqa: E731
    c, val = best(params["C"], acc)
    return Fitted("linear_probe", states[c], {"C": float(c)}, val, candidates=len(params["C"]))
