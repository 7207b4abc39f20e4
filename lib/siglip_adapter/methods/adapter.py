"""The training-free SigLIP-Adapter (the paper's eq. 6, ``cache.adapter_logits``): caption keys
weighted by alpha against image keys, sharpness theta, residual weight beta, all three searched on
validation over ``methods.adapter``'s grid (the authors' scripts fixed them). ``methods.adapter.keys``
says what the text keys are (``TEXT_KEYS``): the shots' captions (the paper's), each shot's class
prompt, or none (alpha = 0 only: Tip-Adapter's cache on the adapter's grid).

Beside its rows, at every cell: the caption ablation (table ``text_keys``: the adapter refitted
with each kind of text key, every choice again on validation) and, at the largest K, its
sensitivity to alpha and theta (table ``sensitivity``)."""

from __future__ import annotations

from typing import Literal

from ..schema import Grid, UnitGrid, WeightGrid
from .cache import fit_cache, grid_accuracies, score_cache
from .loop import Fitted, Task
from .registry import MethodParams, method

TEXT_KEYS = {"caption": "caption keys", "classname": "class-name keys", "none": "no text keys (alpha = 0)"}


class Params(MethodParams):
    alpha: UnitGrid  # caption-key weight
    theta: Grid  # sharpness: exp(theta (s - 1)) needs theta > 0
    beta: WeightGrid  # few-shot weight
    keys: Literal[tuple(TEXT_KEYS)]  # what the text keys are


def sensitivity(cfg: dict, k: int, task: Task, fitted: Fitted, test, params: dict) -> list[dict]:
    """How sensitive the adapter is to alpha and theta, at the largest K (one seed's rows): the
    validation and test accuracy at every (alpha, theta) of its grid, beta held at the value
    validation chose. An analysis of the grid, not a selection: nothing here is chosen."""
    from ..inputs import run_columns

    if k != max(cfg["shots"]) or task.seed is None:
        return []
    s, c, beta = task.shots, fitted.chosen, [float(fitted.chosen["beta"])]
    acc = {name: grid_accuracies(x.images, x.labels, s.images, s.captions, s.labels, task.class_text, params["alpha"], params["theta"], beta,
                                 task.scale, task.bias)[:, :, 0] for name, x in {"val_accuracy": task.val, "accuracy": test}.items()}
    return [{**run_columns(cfg), "shots": k, "seed": task.seed, "alpha": float(alpha), "theta": float(theta), "beta": beta[0],
             "val_accuracy": float(acc["val_accuracy"][i, j]), "accuracy": float(acc["accuracy"][i, j]),
             "chosen": bool(alpha == c["alpha"] and theta == c["theta"])}
            for i, alpha in enumerate(params["alpha"]) for j, theta in enumerate(params["theta"])]


@method("adapter", params=Params, score=score_cache, label="SigLIP-Adapter (training-free)", kind="training-free", order=90, paper=True, search="paper's grid (alpha x theta x beta)",
        tables={"sensitivity": sensitivity}, variants={"text_keys": ("keys", tuple(TEXT_KEYS))})
def fit(task: Task, params: dict) -> Fitted:
    keys = params.get("keys", "caption")
    if keys not in TEXT_KEYS:
        raise ValueError(f"methods.adapter.keys '{keys}' is not one of {list(TEXT_KEYS)}")
    text = task.class_text[task.shots.labels] if keys == "classname" else None
    alphas = [0.0] if keys == "none" else params["alpha"]
    return fit_cache("adapter", task, alphas, params["theta"], params["beta"], text)
