"""IDEA, training-free (Ye et al., 2024, "IDEA: Image Description Enhanced CLIP-Adapter"; the
paper's own starting point): the cache's affinity averages the query's similarity to the shots'
image features and to their captions' features, eq. 6 at a fixed alpha (``methods.idea.alpha``,
0.5: the average), with sharpness and residual weight searched on validation. The authors'
scripts used fixed values for all three; the ``fixed_idea_cache`` switch reproduces that."""

from __future__ import annotations

from . import Fitted, Task, register
from .cache import fit_cache, score_cache


@register("idea", score_cache)
def fit(task: Task, params: dict) -> Fitted:
    return fit_cache("idea", task, [params["alpha"]], params["theta"], params["beta"])
