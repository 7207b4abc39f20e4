"""Zero-shot: the class prompt closest to the image, in the protocol's logit form (CLIP, Radford et
al., ICML 2021; SigLIP, Zhai et al., ICCV 2023). Nothing is fitted and nothing chosen."""

from __future__ import annotations

from . import Fitted, Task, register


@register("zero_shot")
def fit(task: Task, params: dict) -> Fitted:
    fitted = Fitted("zero_shot", lambda images, captions: task.zero_shot(images))
    fitted.val_accuracy = fitted.accuracy(task.val)
    return fitted
