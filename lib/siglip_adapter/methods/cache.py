"""The training-free caches of eq. 6 (Tip-Adapter, IDEA, the training-free SigLIP-Adapter) differ
only in which caption weights alpha the validation search may pick; this is their one fit."""

from __future__ import annotations

from .. import adapters
from . import Fitted, Task, zero_shot_state


def fit_cache(name: str, task: Task, alphas, thetas, betas, text_keys=None) -> Fitted:
    """Eq. 6 with (alpha, theta, beta) searched on validation over the grids (``search_adapter``);
    ``text_keys`` (N*K, D): the cache's text keys, by default the shots' captions."""
    s = task.shots
    keys = s.captions if text_keys is None else text_keys
    if keys is None:
        if any(a != 0 for a in alphas):
            raise ValueError(f"{name}: the shots have no captions, so only alpha = 0 is possible")
        keys = s.images  # unused at alpha = 0
    c = adapters.search_adapter(task.val.images, task.val.labels, s.images, keys, s.labels, task.class_text, alphas, thetas, betas,
                                task.scale, task.bias)
    state = {**zero_shot_state(task), "image_keys": s.images, "text_keys": keys, "key_labels": s.labels}
    return Fitted(name, state, {"alpha": c.alpha, "theta": c.theta, "beta": c.beta}, c.val_accuracy)


def score_cache(state: dict, chosen: dict, images):
    """Eq. 6 from a cache's state and its chosen (alpha, theta, beta)."""
    return adapters.adapter_logits(images, state["image_keys"], state["text_keys"], state["key_labels"], state["class_text"],
                                   chosen["alpha"], chosen["theta"], chosen["beta"], float(state["scale"]), float(state["bias"]))
