"""Zero-shot with captions (the paper's Table I, second column): each class prompt matched against
the image and its own generated caption, ``(1 - alpha) zs(i) + alpha zs(c)``, the caption weight
alpha chosen on validation (``methods.zero_shot_captions.method: caption_mix``): one row per run
(K = 0) on the whole validation split, or one per seed where the protocol draws validation images
per seed (``validation.per_class``); none where the test images have no captions
(``captions.only_shots``). The authors' scripts put a fixed training-free cache on the smallest K's
shots in that column instead (``fixed_cache``, the ``fixed_idea_cache`` switch): eq. 6 at the fixed
values, one row per seed, nothing chosen."""

from __future__ import annotations

from typing import Literal

import torch

from ..schema import NonNegative, Positive, Unit, UnitGrid
from .cache import adapter_logits
from .loop import Fitted, Task, accuracy, zero_shot_logits, zero_shot_state
from .registry import MethodParams, method


class Fixed(MethodParams):
    alpha: Unit  # caption-key weight
    theta: Positive  # sharpness
    beta: NonNegative  # cache weight


class Params(MethodParams):
    method: Literal["caption_mix", "fixed_cache"]
    alpha: UnitGrid  # caption_mix: the caption weights searched
    fixed: Fixed  # fixed_cache: the values


def caption_zero_shot_logits(images: torch.Tensor, captions: torch.Tensor, class_text: torch.Tensor, alpha: float,
                             scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """Zero-shot with captions: each class prompt is matched against the image and the image's
    own generated caption, ``(1 - alpha) zs(i) + alpha zs(c)``.

    images (M, D), captions (M, D) caption features of the same images, class_text (N, D).
    """
    return (1 - alpha) * zero_shot_logits(images, class_text, scale, bias) + alpha * zero_shot_logits(captions, class_text, scale, bias)


def search_caption_alpha(val_images, val_captions, val_labels, class_text, alphas, scale=1.0, bias=0.0) -> tuple[float, float]:
    """The caption weight of zero-shot-with-captions chosen on validation: (alpha, val accuracy)."""
    best = None
    for a in alphas:
        acc = accuracy(caption_zero_shot_logits(val_images, val_captions, class_text, a, scale, bias), val_labels)
        if best is None or acc > best[1]:
            best = (float(a), acc)
    return best


def cells(cfg: dict, inp, params: dict) -> list[tuple[int, int | None]]:
    from ..config import seeds

    if params["method"] == "fixed_cache":
        return [(min(cfg["shots"]), seed) for seed in seeds(cfg)]
    if inp.split("test")[1] is None:  # captions.only_shots: the test images have no captions to mix in
        return []
    return [(0, seed) for seed in seeds(cfg)] if int(cfg["validation"]["per_class"]) else [(0, None)]


def score(state, chosen, images, captions):
    scale, bias = float(state["scale"]), float(state["bias"])
    if "theta" in chosen:  # fixed_cache
        return adapter_logits(images, state["image_keys"], state["caption_keys"], state["key_labels"], state["class_text"], chosen["alpha"],
                              chosen["theta"], chosen["beta"], scale, bias)
    return caption_zero_shot_logits(images, captions, state["class_text"], chosen["alpha"], scale, bias)


@method("zero_shot_captions", params=Params, score=score, label="Zero-shot + captions", kind="zero-shot", order=10, paper=True,
        search="caption weight grid", cells=cells, query_captions=True)
def fit(task: Task, params: dict) -> Fitted:
    state = zero_shot_state(task)
    if params["method"] == "fixed_cache":
        s, f = task.shots, params["fixed"]
        state.update(image_keys=s.images, caption_keys=s.captions, key_labels=s.labels)
        return Fitted("zero_shot_captions", state, {"alpha": f["alpha"], "theta": f["theta"], "beta": f["beta"]}, selected_on="fixed",
                      search="fixed values", candidates=1)
    v = task.val
    alpha, val = search_caption_alpha(v.images, v.captions, v.labels, task.class_text, params["alpha"], task.scale, task.bias)
    return Fitted("zero_shot_captions", state, {"alpha": alpha}, val, candidates=len(params["alpha"]))
