"""The training-free SigLIP-Adapter (the paper's eq. 6): caption keys weighted by alpha against
image keys, sharpness theta, residual weight beta, all three searched on validation over the
``adapter`` grid of the params (the authors' scripts fixed them). ``adapter.keys`` says what the
text keys are (``TEXT_KEYS``): the shots' captions (the paper's), each shot's class prompt, or none
(alpha = 0 only: Tip-Adapter's cache on the adapter's grid), for the caption ablation."""

from __future__ import annotations

from . import Fitted, Task, register
from ..schema import TEXT_KEYS
from .cache import fit_cache, score_cache


@register("adapter", score_cache)
def fit(task: Task, params: dict) -> Fitted:
    keys = params.get("keys", "caption")
    if keys not in TEXT_KEYS:
        raise ValueError(f"adapter.keys '{keys}' is not one of {list(TEXT_KEYS)}")
    text = task.class_text[task.shots.labels] if keys == "classname" else None
    alphas = [0.0] if keys == "none" else params["alpha"]
    return fit_cache("adapter", task, alphas, params["theta"], params["beta"], text)
