"""The training-free SigLIP-Adapter (the paper's eq. 6, ``cache.adapter_logits``): caption keys
weighted by alpha against image keys, sharpness theta, residual weight beta, all three searched on
validation over ``methods.adapter``'s grid (the authors' scripts fixed them). ``methods.adapter.keys``
says what the text keys are (``TEXT_KEYS``): the shots' captions (the paper's), each shot's class
prompt, or none (alpha = 0 only: Tip-Adapter's cache on the adapter's grid), for the caption ablation."""

from __future__ import annotations

from typing import Literal

from ..schema import Grid, UnitGrid, WeightGrid
from .loop import Fitted, Task
from .cache import fit_cache, score_cache
from .registry import MethodParams, method

TEXT_KEYS = {"caption": "caption keys", "classname": "class-name keys", "none": "no text keys (alpha = 0)"}


class Params(MethodParams):
    alpha: UnitGrid  # caption-key weight
    theta: Grid  # sharpness: exp(theta (s - 1)) needs theta > 0
    beta: WeightGrid  # few-shot weight
    keys: Literal[tuple(TEXT_KEYS)]  # what the text keys are


@method("adapter", params=Params, score=score_cache, label="SigLIP-Adapter (training-free)", kind="training-free", order=90, paper=True)
def fit(task: Task, params: dict) -> Fitted:
    keys = params.get("keys", "caption")
    if keys not in TEXT_KEYS:
        raise ValueError(f"methods.adapter.keys '{keys}' is not one of {list(TEXT_KEYS)}")
    text = task.class_text[task.shots.labels] if keys == "classname" else None
    alphas = [0.0] if keys == "none" else params["alpha"]
    return fit_cache("adapter", task, alphas, params["theta"], params["beta"], text)
