"""Zero-shot: the class prompt closest to the image, in the protocol's logit form (CLIP, Radford et
al., ICML 2021; SigLIP, Zhai et al., ICCV 2023). Nothing is fitted and nothing chosen: one row per
run (K = 0, no seed), its validation accuracy on the whole validation split. Its parameter, the
logit form (``methods.zero_shot.logit_form``, read by ``inputs.Inputs``), is the one every method
that adds to zero-shot keeps."""

from __future__ import annotations

from typing import Literal

from .loop import Fitted, Task, zero_shot_of, zero_shot_state
from .registry import MethodParams, method


class Params(MethodParams):
    logit_form: Literal["cosine", "cosine100", "siglip"]  # cosine | 100 x cosine | cos * exp(logit_scale) + logit_bias


def score(state, chosen, images):
    return zero_shot_of(state, images)


@method("zero_shot", params=Params, score=score, label="Zero-shot", kind="zero-shot", order=0, search="none", cells=lambda cfg, inp, params: [(0, None)])
def fit(task: Task, params: dict) -> Fitted:
    fitted = Fitted("zero_shot", zero_shot_state(task), selected_on="none", candidates=0)
    fitted.val_accuracy = fitted.accuracy(task.val)
    return fitted
