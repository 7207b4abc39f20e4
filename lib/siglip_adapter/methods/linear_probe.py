"""Linear probe: L2-regularised multinomial logistic regression on the shots' image features
(scikit-learn, lbfgs), CLIP's linear probe as CoOp runs it for few-shot (Zhou et al., IJCV 2022,
"Learning to Prompt for Vision-Language Models"): the inverse regularisation C is searched on the
protocol's validation set over ``methods.linear_probe.C``. No zero-shot term."""

from __future__ import annotations

import numpy as np
import torch

from . import Fitted, Task, best, register


def _probe(task: Task, c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    x, y = task.shots.images.double().numpy(), task.shots.labels.numpy()
    return LogisticRegression(C=c, max_iter=max_iter, random_state=task.seed).fit(x, y)


def probe_logits(model, images: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(M, N) decision values, a column per class (a class with no shots never wins)."""
    out = np.full((len(images), n_classes), -np.inf)
    out[:, model.classes_] = model.decision_function(images.double().numpy()).reshape(len(images), -1)
    return torch.from_numpy(out).float()


@register("linear_probe")
def fit(task: Task, params: dict) -> Fitted:
    max_iter = params.get("max_iter", 1000)
    models = {c: _probe(task, float(c), max_iter) for c in params["C"]}
    acc = lambda c: float((probe_logits(models[c], task.val.images, task.n_classes).argmax(-1) == task.val.labels).float().mean())  # noqa: E731
    c, val = best(params["C"], acc)
    return Fitted("linear_probe", lambda images, captions: probe_logits(models[c], images, task.n_classes), {"C": float(c)}, val)
