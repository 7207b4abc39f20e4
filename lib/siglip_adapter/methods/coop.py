"""CoOp (Zhou et al., IJCV 2022, "Learning to Prompt for Vision-Language Models"): the class
prompts' context words become learned vectors, ``"[V1] ... [Vm] <class name>."``, trained with
cross-entropy on the shots through the frozen text tower (``ContextPrompts`` below: MiniLM under
the offline encoder, SigLIP's or CLIP's text tower on the hub); images are classified by their
cosine to the learned prompts. This is the one method that cannot run on cached text features:
every step re-encodes the N prompts.

``coop`` is the authors' released code (KaiyangZhou/CoOp ``trainers/coop.py`` as its
``scripts/coop/main.sh`` runs it for the few-shot results): 16 context vectors drawn from
N(0, 0.02^2) (``methods.coop.n_ctx``; ``init`` a phrase instead: its words' token vectors, the
authors' ``CTX_INIT``), one context shared by the classes (``class_specific``: CSC), the class name
at the end, CLIP's logit scale, through Dassl's loop with CoOp's configs
(``configs/trainers/CoOp/rn50_ep50`` at 1 shot, ``rn50_ep100`` at 2 and 4, ``rn50`` from 8, as its
COOP.md assigns them): SGD at lr 0.002 (momentum 0.9, Dassl's weight decay 5e-4), batches of 32,
one constant warm-up epoch at 1e-5, a cosine per epoch; nothing is chosen on any split, the last
epoch is the model. ``tests/test_parity.py`` checks it against their ``PromptLearner``,
``TextEncoder``, ``CustomCLIP`` and trainer on a tiny CLIP text tower both sides load. Where the
kit differs: their images are an augmented view per epoch through the image tower, here the stored
features (one view); their precision is float16 on a GPU.

Its cost is ~2,000 text-tower passes per seed over the five K (~1,000 at 16 shots): on a GPU a few
minutes; on the offline encoder's CPU text tower (~0.1 s a pass on 2 cores) half an hour per
dataset. The offline profile therefore runs ``coop_val`` in its place (``methods.instead``): the
kit's deviation, a row of its own. It starts from the init phrase's vectors (``methods.coop_val.init``,
4 for "a photo of a"), class-specific by default (a shared context cannot separate classes whose
names the text tower does not tell apart, such as the offline encoder's digits), AdamW with a
cosine schedule over full-batch steps at the logit scale ``methods.coop_val.logit_scale``, learning
rate and epoch chosen on the protocol's validation set, early stopping, few steps
(``methods.coop_val.epochs``).

The prompts (``ContextPrompts``): a class prompt's context words as learned vectors through the
frozen text tower. A prompt is ``"<init> <class name>."``; the tokens of ``init`` (e.g. "a photo of
a"; the authors' "X X ... X" placeholders for a random start) are the context slots.
``ContextPrompts.features(ctx)`` runs the encoder's own text path (``text_inputs`` ->
``text_features``) with the token-embedding table's output replaced by ``ctx`` at those slots (a
forward hook on the table), so the tower, its padding, masking and pooling are the encoder's and
nothing is re-implemented per architecture. At ``ctx = init_context()`` (the table's rows for the
init words) the features equal ``encode_texts`` of the same prompts. Gradients reach ``ctx`` only:
the tower's weights are frozen."""

from __future__ import annotations

from typing import Annotated, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..prompts import clean_classname
from ..schema import Count, NonNegative, Positive
from .clap import CLIP_LOGIT_SCALE
from .loop import Fitted, Task
from .registry import method
from .training import DasslSchedule, Schedule, Training, dassl_epochs, epochs_at, fit_on_shots


class Params(DasslSchedule):  # the authors' CoOp: SGD through Dassl's loop
    n_ctx: Count  # context vectors of a random start (init "")
    init: str  # "": a random start, N(0, 0.02^2) | a phrase: its words' token vectors (the authors' CTX_INIT)
    class_specific: bool
    momentum: NonNegative


class ValParams(Training):  # the kit's budgeted CoOp
    init: Annotated[str, Field(min_length=1)]  # the context's start phrase
    class_specific: bool
    logit_scale: Positive
    eval_every: Count


class ContextPrompts:
    """The N class prompts of a dataset with ``init``'s tokens as learnable context slots."""

    def __init__(self, encoder, classnames: Sequence[str], init: str = "a photo of a", n_ctx: int = 16):
        """``init`` "": ``n_ctx`` placeholder words as the slots (the authors' "X"; "x" or "a" where
        the tokenizer splits "X": a slot's word is never read, the context replaces it)."""
        self.random = not init
        init = init or self.placeholders(encoder.tokenizer, n_ctx)
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
    def placeholders(tokenizer, n_ctx: int) -> str:
        for word in ("X", "x", "a"):
            phrase = " ".join([word] * n_ctx)
            if len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) == n_ctx:
                return phrase
        raise ValueError(f"CoOp: the tokenizer splits every placeholder word ('X', 'x', 'a') into several tokens; set methods.coop.init")

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

    def start(self, class_specific: bool) -> torch.Tensor:
        """The context to train from: (n_ctx, E) shared, (N, n_ctx, E) class-specific. A random
        start is drawn from the global RNG as the authors draw it (``torch.empty``, then
        ``normal_`` with std 0.02); otherwise the init words' rows, the same for every class."""
        ctx = self.init_context()
        if not self.random:
            return ctx.repeat(len(self.prompts), 1, 1) if class_specific else ctx
        return nn.init.normal_(torch.empty((len(self.prompts), *ctx.shape) if class_specific else ctx.shape), std=0.02)

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
    def __init__(self, prompts: ContextPrompts, logit_scale: float | torch.Tensor, class_specific: bool = False):
        super().__init__()
        self.ctx = nn.Parameter(prompts.start(class_specific))  # (n_ctx, E) shared by the classes | CSC: (N, n_ctx, E)
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


def _prompts(task: Task, params: dict, name: str) -> ContextPrompts:
    if task.encoder is None or task.classnames is None:
        raise ValueError(f"{name} trains its prompts through the text tower: the task needs the encoder and the class names")
    return ContextPrompts(task.encoder, task.classnames, params["init"], params.get("n_ctx", 16))


def _state(model: CoOp) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        class_text = model.class_text()
    return {"class_text": class_text, "context": model.ctx.detach().clone(), "logit_scale": torch.as_tensor(model.logit_scale, dtype=torch.float32).clone()}


@method("coop", params=Params, score=score, label="CoOp", kind="trained", order=80, search="none: the authors' fixed settings, last epoch")
def fit(task: Task, params: dict) -> Fitted:
    prompts = _prompts(task, params, "coop")
    s = task.shots
    epochs = epochs_at(params, len(s.labels) // task.n_classes)
    torch.manual_seed(task.seed)  # as Dassl seeds before building the prompt learner
    model = CoOp(prompts, CLIP_LOGIT_SCALE, params["class_specific"])
    opt = torch.optim.SGD([model.ctx], lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"])
    history = dassl_epochs(opt, lambda images, labels: F.cross_entropy(model(images), labels), s, epochs, params["lr"], params["warmup_lr"],
                           int(params["batch_size"]))
    return Fitted("coop", _state(model), {"epoch": epochs, "n_ctx": prompts.n_ctx}, history=history, selected_on="none", candidates=1)


@method("coop_val", params=ValParams, score=score, label="CoOp (val-tuned, budgeted)", kind="trained", order=81, search="kit's: lr x epoch")
def fit_val(task: Task, params: dict) -> Fitted:
    prompts = _prompts(task, params, "coop_val")
    run = fit_on_shots(lambda: CoOp(prompts, params["logit_scale"], params.get("class_specific", False)), task.shots, task.val,
                       Schedule.of(params), task.seed, task.trajectory("coop_val", params))
    return Fitted("coop_val", _state(run.model), {"lr": run.lr, "epoch": run.epoch, "n_ctx": prompts.n_ctx}, run.val_accuracy, run.history,
                  candidates=len(run.history))
