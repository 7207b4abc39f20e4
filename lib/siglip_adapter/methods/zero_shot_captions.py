"""Zero-shot with captions (the paper's Table I, second column): each class prompt matched against
the image and its own generated caption, ``(1 - alpha) zs(i) + alpha zs(c)``, the caption weight
alpha chosen on validation (``methods.zero_shot_captions.method: caption_mix``). The authors'
scripts put a fixed training-free cache on the smallest K's shots in that column instead
(``fixed_cache``, the ``fixed_idea_cache`` switch). Its rows are built by the 03_zero_shot stage
(``experiment.zero_shot_rows``), so it is declared here for its parameters, label and place, and is
not a choice of ``methods.run``."""

from __future__ import annotations

from typing import Literal

import torch

from ..schema import NonNegative, Positive, Unit, UnitGrid
from .loop import accuracy, zero_shot_logits
from .registry import MethodParams, declare


class Fixed(MethodParams):
    alpha: Unit  # caption-key weight
    theta: Positive  # sharpness
    beta: NonNegative  # cache weight


class Params(MethodParams):
    method: Literal["caption_mix", "fixed_cache"]
    alpha: UnitGrid  # caption_mix: the caption weights searched
    fixed: Fixed  # fixed_cache: the values


declare("zero_shot_captions", __name__, params=Params, label="Zero-shot + captions", kind="zero-shot", order=10, paper=True)


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
