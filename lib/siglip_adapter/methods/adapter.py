"""The training-free SigLIP-Adapter (the paper's eq. 6): caption keys weighted by alpha against
image keys, sharpness theta, residual weight beta, all three searched on validation over the
``adapter`` grid of the params (the authors fixed them)."""

from __future__ import annotations

from . import Fitted, Task, register
from .cache import fit_cache, score_cache


@register("adapter", score_cache)
def fit(task: Task, params: dict) -> Fitted:
    return fit_cache("adapter", task, params["alpha"], params["theta"], params["beta"])
