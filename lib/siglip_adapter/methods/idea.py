"""IDEA, training-free (Ye et al., 2024, "IDEA: Image Description Enhanced CLIP-Adapter"; the
paper's own starting point): the cache's affinity averages the query's similarity to the shots'
image features and to their captions' features, eq. 6 at a fixed alpha (``methods.idea.alpha``,
0.5: the average), with sharpness and residual weight searched on validation. The authors'
scripts used fixed values for all three; the ``fixed_idea_cache`` switch reproduces that."""

from __future__ import annotations

from ..schema import Unit
from .loop import Fitted, Task
from .cache import GridParams, fit_cache, score_cache
from .registry import method


class Params(GridParams):
    alpha: Unit  # the caption affinities' weight, fixed


@method("idea", params=Params, score=score_cache, label="IDEA (training-free)", kind="training-free", order=70, search="kit's grid")
def fit(task: Task, params: dict) -> Fitted:
    return fit_cache("idea", task, [params["alpha"]], params["theta"], params["beta"])
