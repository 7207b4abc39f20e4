"""Zero-shot: the class prompt closest to the image, in the protocol's logit form (CLIP, Radford et
al., ICML 2021; SigLIP, Zhai et al., ICCV 2023). Nothing is fitted and nothing chosen. And
zero-shot with captions (Table I's second column): each class prompt matched against the image and
its own generated caption, the caption weight chosen on validation."""

from __future__ import annotations

import torch

from . import Fitted, Task, accuracy, register, zero_shot_logits, zero_shot_of, zero_shot_state


def score(state, chosen, images):
    return zero_shot_of(state, images)


@register("zero_shot", score)
def fit(task: Task, params: dict) -> Fitted:
    fitted = Fitted("zero_shot", zero_shot_state(task))
    fitted.val_accuracy = fitted.accuracy(task.val)
    return fitted


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
