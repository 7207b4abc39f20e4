"""Tip-Adapter (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification"): a cache whose keys are the shots' image features and whose values are their
one-hot labels, added to zero-shot: eq. 6 at alpha = 0 (Tip-Adapter names our sharpness theta its
beta, and our residual weight beta its alpha). Both are searched on the protocol's validation set
over ``methods.tip_adapter``'s grid, never on test. The published code (Tip-Adapter's main.py)
searches them on the validation split for CoOp's ten datasets, but on the test set for ImageNet
(main_imagenet.py, which has no validation split); the kit never does."""

from __future__ import annotations

from ..schema import Grid, WeightGrid
from .loop import Fitted, Task
from .cache import fit_cache, score_cache
from .registry import MethodParams, method


class Params(MethodParams):
    theta: Grid  # sharpness
    beta: WeightGrid  # residual weight


@method("tip_adapter", params=Params, score=score_cache, label="Tip-Adapter", kind="training-free", order=30)
def fit(task: Task, params: dict) -> Fitted:
    return fit_cache("tip_adapter", task, [0.0], params["theta"], params["beta"])
