"""CoOp (Zhou et al., IJCV 2022, "Learning to Prompt for Vision-Language Models"): the class
prompts' context words become learned vectors, ``"[V1] ... [Vm] <class name>."``, one context
shared by the classes, trained with cross-entropy on the shots through the frozen text tower
(``ContextPrompts`` below: MiniLM under the offline encoder, SigLIP's text tower on the hub);
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
a budgeted CoOp, not the published schedule.

The prompts (``ContextPrompts``): a class prompt's context words as learned vectors through the
frozen text tower. A prompt is ``"<init> <class name>."``; the tokens of ``init`` (e.g. "a photo of a") are the
context slots. ``ContextPrompts.features(ctx)`` runs the encoder's own text path
(``text_inputs`` -> ``text_features``) with the token-embedding table's output replaced by
``ctx`` at those slots (a forward hook on the table), so the tower, its padding, masking and
pooling are the encoder's and nothing is re-implemented per architecture. At ``ctx =
init_context()`` (the table's rows for the init words) the features equal ``encode_texts`` of the
same prompts. Gradients reach ``ctx`` only: the tower's weights are frozen."""

from __future__ import annotations

from typing import Annotated, Sequence

import torch
from pydantic import Field
from torch import nn

from ..prompts import clean_classname
from ..schema import Count, Positive
from .loop import Fitted, Task
from .registry import method
from .training import Schedule, Training, fit_on_shots


class Params(Training):
    init: Annotated[str, Field(min_length=1)]  # the context's start phrase
    class_specific: bool
    logit_scale: Positive
    eval_every: Count


class ContextPrompts:
    """The N class prompts of a dataset with ``init``'s tokens as learnable context slots."""

    def __init__(self, encoder, classnames: Sequence[str], init: str = "a photo of a"):
        self.encoder, self.init = encoder, init
        self.prompts = [f"{init} {clean_classname(c)}." for c in classnames]
        self.inputs = encoder.text_inputs(self.prompts)
        ids = self.inputs["input_ids"]
        init_ids = encoder.tokenizer(init, add_special_tokens=False)["input_ids"]
        if not init_ids:
            raise ValueError("CoOp: the context init phrase has no tokens")
        self.slots = torch.stack([self._find(row, init_ids, p) for row, p in zip(ids.tolist(), self.prompts)])  # (N, n_ctx)
        self.n_ctx = len(init_ids)
        self._init_ids = torch.tensor(init_ids, device=ids.device)

    @staticmethod
    def _find(row: list[int], sub: list[int], prompt: str) -> torch.Tensor:
        for i in range(len(row) - len(sub) + 1):
            if row[i : i + len(sub)] == sub:
                return torch.arange(i, i + len(sub))
        raise ValueError(f"CoOp: the init phrase's tokens are not found in the tokenised prompt {prompt!r} (tokenizer merged them)")

    def init_context(self) -> torch.Tensor:
        """(n_ctx, E) the token table's rows of the init words (float32, a detached copy)."""
        with torch.no_grad():
            return self.encoder.input_embeddings()(self._init_ids).float().cpu().clone()

    def features(self, ctx: torch.Tensor) -> torch.Tensor:
        """(N, D) normalised class-prompt features with ``ctx`` (n_ctx, E) in the context slots,
        differentiable in ``ctx``; on the CPU."""
        table = self.encoder.input_embeddings()
        rows = torch.arange(len(self.prompts))[:, None]

        def put_context(module, args, out):
            out = out.clone()
            out[rows, self.slots.to(out.device)] = ctx.to(device=out.device, dtype=out.dtype)
            return out

        frozen = [p for p in self.encoder.text_tower_parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        handle = table.register_forward_hook(put_context)
        try:
            return self.encoder.text_features(self.inputs).cpu()
        finally:
            handle.remove()
            for p in frozen:
                p.requires_grad_(True)

    def __deepcopy__(self, memo):
        """The tower is shared, never copied (a trained model holding this is copied per best epoch)."""
        return self


class CoOp(nn.Module):
    def __init__(self, prompts: ContextPrompts, logit_scale: float, class_specific: bool = False):
        super().__init__()
        ctx = prompts.init_context()  # (n_ctx, E): one context shared by the classes
        self.ctx = nn.Parameter(ctx.repeat(len(prompts.prompts), 1, 1) if class_specific else ctx)  # CSC: (N, n_ctx, E)
        self.prompts, self.logit_scale = prompts, logit_scale  # the prompts hold the frozen tower (not a submodule)
        self._text = None  # (the context's version, its class_text): one tower pass per context value

    def class_text(self) -> torch.Tensor:
        """The class prompts' features at the current context, differentiable in it. A validation
        check and the training step after it see the same context, so they share one tower pass:
        the features are computed with their graph even under ``no_grad`` and kept until the
        optimiser changes the context (its in-place step bumps the tensor's version)."""
        version = self.ctx._version
        if self._text is None or self._text[0] != version or (torch.is_grad_enabled() and self._text[1].grad_fn is None):
            with torch.enable_grad():
                self._text = (version, self.prompts.features(self.ctx))
        return self._text[1]

    def __getstate__(self):
        """A copy (the best epoch's model) leaves the features and their graph behind."""
        return {**super().__getstate__(), "_text": None}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * images @ self.class_text().T


def score(state, chosen, images):
    return float(state["logit_scale"]) * images @ state["class_text"].T


@method("coop", params=Params, score=score, label="CoOp", kind="trained", order=80, search="lr x epoch")
def fit(task: Task, params: dict) -> Fitted:
    if task.encoder is None or task.classnames is None:
        raise ValueError("coop trains its prompts through the text tower: the task needs the encoder and the class names")
    prompts = ContextPrompts(task.encoder, task.classnames, params["init"])
    s = task.shots
    run = fit_on_shots(lambda: CoOp(prompts, params["logit_scale"], params.get("class_specific", False)), s, task.val, Schedule.of(params),
                       task.seed, task.trajectory("coop", params))
    with torch.no_grad():
        class_text = run.model.class_text()
    state = {"class_text": class_text, "context": run.model.ctx.detach().clone(), "logit_scale": torch.tensor(float(params["logit_scale"]))}
    return Fitted("coop", state, {"lr": run.lr, "epoch": run.epoch, "n_ctx": prompts.n_ctx}, run.val_accuracy, run.history, candidates=len(run.history))
