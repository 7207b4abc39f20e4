"""Tip-Adapter (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification"): a cache whose keys are the shots' image features and whose values are their
one-hot labels, added to zero-shot: eq. 6 at alpha = 0 (Tip-Adapter names our sharpness theta its
beta, and our residual weight beta its alpha).

``tip_adapter`` searches as the authors' code does (gaopengcuhk/Tip-Adapter, utils.py
``search_hp``): ``search_step`` values of each, evenly from 0.1 up to (not including)
``search_scale``, the sharpness first, the first best kept; the residual weight in their unit,
against zero-shot logits of ``100 x cosine`` (CLIP's scale), rescaled to the run's logit form (the
rows give it in that form, as every cache's ``beta``). The defaults are the search of their
ImageNet, Pets and UCF101 configs ([7, 3], [200, 20]: 4,000 candidates); a dataset file may set a
config's own. ``tip_adapter_wide`` is the kit's deviation, a row of its own: the adapter's grid
(``methods.tip_adapter_wide``: 56 candidates, residual weight 0 included, so it can fall back to
zero-shot).

Both search on the protocol's validation set only. The authors' code does so for CoOp's ten
datasets but searches on the test set for ImageNet (main_imagenet.py, which has no validation
split), and averages each shot's features over augmented views; the kit does neither.
``tests/test_parity.py`` checks ``tip_adapter`` against the authors' own search on recorded features."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from pydantic import Field

from ..schema import Positive
from .cache import GridParams, fit_cache, score_cache
from .loop import NO_VALIDATION, Fitted, Task, peer_unit
from .registry import MethodParams, method

Pair = Annotated[list[Positive], Field(min_length=2, max_length=2)]


class Params(MethodParams):
    search_scale: Pair  # [sharpness, residual weight]: each grid's end (not included)
    search_step: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]  # values in each grid
    init_beta: Positive  # their config's initial sharpness and residual weight: what their code evaluates before its search,
    init_alpha: Positive  # Tip-Adapter-F trains with, and the choice where no validation image exists (support_only)


def authors_grid(scale: float, steps: int) -> list[float]:
    """``steps`` values evenly from 0.1 up to (not including) ``scale``, as ``search_hp`` builds them."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def search(name: str, task: Task, params: dict, keys=None) -> Fitted:
    """The cache on ``keys`` (default the shots' features) with sharpness and residual weight
    searched on validation as ``search_hp`` searches them; with no validation image, the config's
    initial values."""
    if not task.has_validation:
        fitted = fit_cache(name, task, [0.0], [params["init_beta"]], [params["init_alpha"] * peer_unit(task.scale)], text_keys=keys,
                           image_keys=keys)
        return replace(fitted, search=f"{NO_VALIDATION}: the config's initial values")
    (sharpness, residual), (n_sharpness, n_residual) = params["search_scale"], params["search_step"]
    betas = [a * peer_unit(task.scale) for a in authors_grid(residual, n_residual)]
    return fit_cache(name, task, [0.0], authors_grid(sharpness, n_sharpness), betas, text_keys=keys, image_keys=keys)


@method("tip_adapter", params=Params, score=score_cache, label="Tip-Adapter", kind="training-free", order=30,
        search="authors' grid (search_hp)")
def fit(task: Task, params: dict) -> Fitted:
    return search("tip_adapter", task, params)


@method("tip_adapter_wide", params=GridParams, score=score_cache, label="Tip-Adapter (wide grid)", kind="training-free", order=31,
        search="kit's wide grid")
def fit_wide(task: Task, params: dict) -> Fitted:
    return fit_cache("tip_adapter_wide", task, [0.0], params["theta"], params["beta"])
