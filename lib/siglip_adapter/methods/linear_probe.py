"""Linear probe: L2-regularised multinomial logistic regression on the shots' image features
(scikit-learn, lbfgs, 1,000 iterations), CLIP's linear probe as CoOp's authors run it for few-shot
(Zhou et al., IJCV 2022, "Learning to Prompt for Vision-Language Models"; KaiyangZhou/CoOp
``lpclip/linear_probe.py``, run by its ``linear_probe.sh`` with 8 steps). No zero-shot term.

The inverse regularisation C is chosen on the protocol's validation images as their script does:
the best of ``methods.linear_probe.C`` (their [1e6, 1e4, ..., 1e-6]; the first best, so the
largest C on ties), then ``steps`` halvings of a range in log10 C that starts at [c / 10, 10 c]:
each step fits both ends, keeps the better one (the left on a tie) as the choice and halves the
range towards it. The model is the last step's choice, whether or not an earlier C scored higher
on validation (as theirs). ``steps: 0`` is a plain search over ``C`` (a kit option: the first
best of the grid). ``tests/test_parity.py`` checks it against their script on recorded features.

Where the authors differ and the kit does not follow: their features are CLIP's image features as
the tower returns them; the kit's are L2-normalised, as every method here reads them."""

from __future__ import annotations

import numpy as np
import torch

from ..schema import Grid, NonNegativeCount
from .loop import Fitted, Task, best
from .registry import MethodParams, method


class Params(MethodParams):
    C: Grid  # the inverse regularisation strengths searched first
    steps: NonNegativeCount = 8  # halvings of the range around the best of C (their linear_probe.sh: 8); 0: C alone


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


def refine(c: float, steps: int, acc) -> float:
    """The authors' halving search from the grid's best ``c``: ``steps`` rounds over a range in log10 C,
    starting at [c / 10, 10 c]; each round keeps the better end (the left one on a tie) and the half of
    the range next to it. Returns the last round's kept C (``c`` itself with no step). Their arithmetic,
    in float64: the ends after the first round are ``10 ** x`` of the log10 bounds."""
    left, right = 0.1 * c, 10.0 * c
    for _ in range(steps):
        if acc(left) < acc(right):
            c = right
            left, right = np.power(10, 0.5 * (np.log10(right) + np.log10(left))), np.power(10, np.log10(right))
        else:
            c = left
            left, right = np.power(10, np.log10(left)), np.power(10, 0.5 * (np.log10(right) + np.log10(left)))
    return float(c)


@method("linear_probe", params=Params, score=score, label="Linear probe", kind="training-free", order=20, search="authors' search")
def fit(task: Task, params: dict) -> Fitted:
    max_iter, steps = params.get("max_iter", 1000), int(params.get("steps", 8)) if task.has_validation else 0
    states: dict[float, dict] = {}  # C -> the fit at it (a round's kept end is the next round's end)

    def acc(c) -> float:
        c = float(c)
        if c not in states:
            states[c] = probe_state(task, c, max_iter)
        return float((score(states[c], {}, task.val.images).argmax(-1) == task.val.labels).float().mean())

    c, val = best(params["C"], acc)
    c = refine(float(c), steps, acc)
    return Fitted("linear_probe", states[c], {"C": c}, acc(c), candidates=len(states),
                  search=None if steps or not task.has_validation else "grid of C (steps 0)")
