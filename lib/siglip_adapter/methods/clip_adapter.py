"""CLIP-Adapter (Gao et al., IJCV 2023, "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters"; the seed article's method): a bottleneck MLP (D -> D/reduction -> D, ReLU after each
layer, no biases) on the image feature, mixed back residually, ``f' = ratio * MLP(f) + (1 - ratio) f``,
then the class prompts as a frozen classifier. Trained on the shots with cross-entropy at CLIP's
logit scale (``logit_scale``, 100: cosine logits alone barely move a softmax); the residual ratio,
learning rate and epoch are chosen on the protocol's validation set (``methods.clip_adapter``).
The released code (clip_adapter.py) fixes the ratio at 0.2, trains through Dassl's trainer on
augmented images and keeps the last epoch; the paper's per-dataset ratios come from a search that
the code does not contain and whose selection split the paper does not name. Here every choice is
made on validation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import Count, Positive, UnitGrid
from .loop import Fitted, Task, best
from .registry import method
from .training import Schedule, Training, fit_on_shots


class Params(Training):
    ratio: UnitGrid  # the residual ratios searched
    reduction: Count  # the bottleneck: D -> D / reduction -> D
    logit_scale: Positive


class ClipAdapter(nn.Module):
    def __init__(self, class_text: torch.Tensor, ratio: float, reduction: int = 4, logit_scale: float = 100.0):
        super().__init__()
        d = class_text.shape[1]
        self.down = nn.Linear(d, max(d // reduction, 1), bias=False)
        self.up = nn.Linear(max(d // reduction, 1), d, bias=False)
        self.register_buffer("class_text", class_text.clone())
        self.ratio, self.logit_scale = ratio, logit_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return adapted_logits(images, self.down.weight, self.up.weight, self.class_text, self.ratio, self.logit_scale)


def adapted_logits(images, down, up, class_text, ratio: float, logit_scale: float) -> torch.Tensor:
    feats = ratio * F.relu(F.relu(images @ down.T) @ up.T) + (1 - ratio) * images
    return logit_scale * F.normalize(feats, dim=-1) @ class_text.T


def score(state, chosen, images):
    return adapted_logits(images, state["down"], state["up"], state["class_text"], chosen["ratio"], float(state["logit_scale"]))


@method("clip_adapter", params=Params, score=score, label="CLIP-Adapter", kind="trained", order=50, search="ratio x lr x epoch")
def fit(task: Task, params: dict) -> Fitted:
    s = task.shots
    runs = {ratio: fit_on_shots(lambda: ClipAdapter(task.class_text, ratio, params["reduction"], params["logit_scale"]), s, task.val,
                                Schedule.of(params), task.seed)
            for ratio in params["ratio"]}
    ratio, _ = best(params["ratio"], lambda r: runs[r].val_accuracy)
    run = runs[ratio]
    state = {"down": run.model.down.weight.detach().clone(), "up": run.model.up.weight.detach().clone(), "class_text": task.class_text,
             "logit_scale": torch.tensor(float(params["logit_scale"]))}
    return Fitted("clip_adapter", state, {"ratio": float(ratio), "lr": run.lr, "epoch": run.epoch}, run.val_accuracy, run.history,
                  candidates=sum(len(r.history) for r in runs.values()))
