"""CoOp (Zhou et al., IJCV 2022, "Learning to Prompt for Vision-Language Models"): the class
prompts' context words become learned vectors, ``"[V1] ... [Vm] <class name>."``, one context
shared by the classes, trained with cross-entropy on the shots through the frozen text tower
(``siglip_adapter.context``: MiniLM under the offline encoder, SigLIP's text tower on the hub);
images are classified by their cosine to the learned prompts. This is the one method that cannot
run on cached text features: every step re-encodes the N prompts.

Published setting: 16 context vectors (or 4 initialised from "a photo of a"), shared by the
classes or one context per class (class-specific context, CSC), SGD at lr 0.002 with a cosine
schedule, batch 32, 50 to 200 epochs by shots, the final epoch reported (no selection). Here: the
init phrase's vectors (``methods.coop.init``, 4 for "a photo of a"), class-specific by default
(``methods.coop.class_specific``: a shared context cannot separate classes whose names the text
tower does not tell apart, such as the offline encoder's digits), AdamW with a cosine schedule over
full-batch steps on the cached image features at the logit scale ``methods.coop.logit_scale``,
learning rate and epoch chosen on the protocol's validation set, early stopping. Every step runs
the text tower forward and back, so the offline run affords few steps (``methods.coop.epochs``):
a budgeted CoOp, not the published schedule."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from ..context import ContextPrompts
from ..schema import Count, Positive
from .loop import Fitted, Task
from .registry import method
from .training import Schedule, Training, fit_on_shots


class Params(Training):
    init: Annotated[str, Field(min_length=1)]  # the context's start phrase
    class_specific: bool
    logit_scale: Positive
    eval_every: Count


class CoOp(nn.Module):
    def __init__(self, prompts: ContextPrompts, logit_scale: float, class_specific: bool = False):
        super().__init__()
        ctx = prompts.init_context()  # (n_ctx, E): one context shared by the classes
        self.ctx = nn.Parameter(ctx.repeat(len(prompts.prompts), 1, 1) if class_specific else ctx)  # CSC: (N, n_ctx, E)
        self.prompts, self.logit_scale = prompts, logit_scale  # the prompts hold the frozen tower (not a submodule)

    def class_text(self) -> torch.Tensor:
        return self.prompts.features(self.ctx)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * images @ self.class_text().T


def score(state, chosen, images):
    return float(state["logit_scale"]) * images @ state["class_text"].T


@method("coop", params=Params, score=score, label="CoOp", kind="trained", order=80)
def fit(task: Task, params: dict) -> Fitted:
    if task.encoder is None or task.classnames is None:
        raise ValueError("coop trains its prompts through the text tower: the task needs the encoder and the class names")
    prompts = ContextPrompts(task.encoder, task.classnames, params["init"])
    s = task.shots
    run = fit_on_shots(lambda: CoOp(prompts, params["logit_scale"], params.get("class_specific", False)), s, task.val, Schedule.of(params),
                       task.seed)
    with torch.no_grad():
        class_text = run.model.class_text()
    state = {"class_text": class_text, "context": run.model.ctx.detach().clone(), "logit_scale": torch.tensor(float(params["logit_scale"]))}
    return Fitted("coop", state, {"lr": run.lr, "epoch": run.epoch, "n_ctx": prompts.n_ctx}, run.val_accuracy, run.history)
