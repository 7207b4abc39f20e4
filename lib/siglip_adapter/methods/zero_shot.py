"""Zero-shot: the class prompt closest to the image, in the protocol's logit form (CLIP, Radford et
al., ICML 2021; SigLIP, Zhai et al., ICCV 2023). Nothing is fitted and nothing chosen."""

from __future__ import annotations

from . import Fitted, Task, register, zero_shot_of, zero_shot_state


def score(state, chosen, images):
    return zero_shot_of(state, images)


@register("zero_shot", score)
def fit(task: Task, params: dict) -> Fitted:
    fitted = Fitted("zero_shot", zero_shot_state(task))
    fitted.val_accuracy = fitted.accuracy(task.val)
    return fitted
