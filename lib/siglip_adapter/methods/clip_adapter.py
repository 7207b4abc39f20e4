"""CLIP-Adapter (Gao et al., IJCV 2023, "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters"; the seed article's method): a bottleneck MLP (D -> D/reduction -> D, ReLU after each
layer, no biases) on the image feature, mixed back residually, ``f' = ratio * MLP(f) + (1 - ratio) f``,
then the class prompts as a frozen classifier at CLIP's logit scale.

``clip_adapter`` is the authors' released code (gaopengcuhk/CLIP-Adapter ``clip_adapter.py``, a
trainer for CoOp's code base, whose README says to run it with CoOp's commands): ratio 0.2 and
reduction 4 fixed in the code, CLIP's logit scale (exp of its ln 100), trained with the configs
CoOp's few-shot runs use (KaiyangZhou/CoOp ``configs/trainers/CoOp/rn50*.yaml`` as its COOP.md
assigns them: 50 epochs at 1 shot, 100 at 2 and 4, 200 from 8), through Dassl's loop: SGD (lr
0.002, momentum 0.9, Dassl's weight decay 5e-4), batches of 32, one constant warm-up epoch at
1e-5, a cosine per epoch; nothing is chosen on any split, the last epoch is the model.
``tests/test_parity.py`` checks it against their ``CustomCLIP`` and trainer on recorded features.

``clip_adapter_val`` is the kit's deviation, a row of its own: the residual ratio, learning rate
and epoch chosen on the protocol's validation set (``fit_on_shots``: full batch, AdamW, early
stopping). The paper's per-dataset ratios come from a search the released code does not contain
and whose selection split the paper does not name.

Where the authors differ and the kit does not follow: each of their epochs sees a fresh augmented
view of each shot, and their image features are CLIP's un-normalised ones; the kit's are its stored,
L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, NonNegative, Positive, Unit, UnitGrid
from .clap import CLIP_LOGIT_SCALE
from .loop import Fitted, Task, best
from .registry import method
from .training import DasslSchedule, Schedule, Training, dassl_epochs, epochs_at, fit_on_shots


class Params(DasslSchedule):  # SGD
    ratio: Unit  # the residual ratio (the released code's 0.2)
    reduction: Count  # the bottleneck: D -> D / reduction -> D
    momentum: NonNegative


class ValParams(Training):
    ratio: UnitGrid  # the residual ratios searched
    reduction: Count
    logit_scale: Positive


class ClipAdapter(nn.Module):
    def __init__(self, class_text: torch.Tensor, ratio: float, reduction: int = 4, logit_scale: float | torch.Tensor = 100.0):
        super().__init__()
        d = class_text.shape[1]
        self.down = nn.Linear(d, max(d // reduction, 1), bias=False)
        self.up = nn.Linear(max(d // reduction, 1), d, bias=False)
        self.register_buffer("class_text", class_text.clone())
        self.register_buffer("unit_text", F.normalize(class_text, dim=-1))  # as the authors' forward renormalises it, once
        self.ratio, self.logit_scale = ratio, logit_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return adapted_logits(images, self.down.weight, self.up.weight, self.unit_text, self.ratio, self.logit_scale)

    def state(self) -> dict[str, torch.Tensor]:
        return {"down": self.down.weight.detach().clone(), "up": self.up.weight.detach().clone(), "class_text": self.class_text,
                "logit_scale": torch.as_tensor(self.logit_scale, dtype=torch.float32).clone()}


def adapted_logits(images, down, up, unit_text, ratio: float, logit_scale) -> torch.Tensor:
    """The authors' ``CustomCLIP.forward`` on features (``unit_text``: the class prompts renormalised):
    the adapted image side renormalised, the scale applied to it first."""
    feats = ratio * F.relu(F.relu(images @ down.T) @ up.T) + (1 - ratio) * images
    return logit_scale * F.normalize(feats, dim=-1) @ unit_text.T


def score(state, chosen, images):
    return adapted_logits(images, state["down"], state["up"], F.normalize(state["class_text"], dim=-1), chosen["ratio"], state["logit_scale"])


@method("clip_adapter", params=Params, score=score, label="CLIP-Adapter", kind="trained", order=50,
        search="none: the authors' fixed settings, last epoch")
def fit(task: Task, params: dict) -> Fitted:
    s = task.shots
    epochs = epochs_at(params, len(s.labels) // task.n_classes)
    torch.manual_seed(task.seed)
    model = ClipAdapter(task.class_text, params["ratio"], params["reduction"], CLIP_LOGIT_SCALE)
    opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"])
    history = dassl_epochs(opt, lambda images, labels: F.cross_entropy(model(images), labels), s, epochs, params["lr"], params["warmup_lr"],
                           int(params["batch_size"]))
    return Fitted("clip_adapter", model.state(), {"ratio": float(params["ratio"]), "epoch": epochs}, history=history, selected_on="none",
                  candidates=1)


@method("clip_adapter_val", params=ValParams, score=score, label="CLIP-Adapter (val-tuned)", kind="trained", order=51,
        search="kit's: ratio x lr x epoch")
def fit_val(task: Task, params: dict) -> Fitted:
    s = task.shots
    runs = {ratio: fit_on_shots(lambda: ClipAdapter(task.class_text, ratio, params["reduction"], params["logit_scale"]), s, task.val,
                                Schedule.of(params), task.seed)
            for ratio in params["ratio"]}
    ratio, _ = best(params["ratio"], lambda r: runs[r].val_accuracy)
    run = runs[ratio]
    return Fitted("clip_adapter_val", run.model.state(), {"ratio": float(ratio), "lr": run.lr, "epoch": run.epoch}, run.val_accuracy, run.history,
                  candidates=sum(len(r.history) for r in runs.values()))
