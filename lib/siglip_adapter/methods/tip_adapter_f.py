"""Tip-Adapter-F (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for
Few-shot Classification"): Tip-Adapter's cache with its keys (the shots' image features) made
learnable and fine-tuned on the shots, the one-hot values fixed. Sharpness and residual weight
are Tip-Adapter's validation choice on the same task; learning rate and epoch are chosen on the
protocol's validation set (``methods.tip_adapter_f``). The published code (Tip-Adapter's main.py:
AdamW, cosine schedule, 20 epochs) trains from its config's initial values, keeps the epoch with
the best TEST accuracy, searches the two values on validation afterwards and reports the larger of
the two test accuracies; here the start is Tip-Adapter's validation choice and the epoch is chosen
on validation, and the test split is scored once."""

from __future__ import annotations

import torch
from torch import nn

from .loop import Fitted, Task, more, zero_shot_state
from .cache import adapter_logits, score_cache
from .registry import method
from .training import Schedule, Training, fit_on_shots


class TipAdapterF(nn.Module):
    def __init__(self, keys: torch.Tensor, labels: torch.Tensor, class_text: torch.Tensor, theta: float, beta: float,
                 scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.keys = nn.Parameter(keys.clone())
        self.register_buffer("labels", labels.clone())
        self.register_buffer("class_text", class_text.clone())
        self.theta, self.beta, self.scale, self.bias = theta, beta, scale, bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. 6 at alpha = 0 with the learnable keys (``adapters.adapter_logits``)."""
        return adapter_logits(images, self.keys, self.keys, self.labels, self.class_text, 0.0, self.theta, self.beta, self.scale, self.bias)


@method("tip_adapter_f", params=Training, score=score_cache, label="Tip-Adapter-F", kind="trained", order=40, start="tip_adapter",
        search="Tip-Adapter's choice, then lr x epoch")
def fit(task: Task, params: dict) -> Fitted:
    started = task.fitted("tip_adapter", params["start"])
    start = started.chosen
    s = task.shots
    run = fit_on_shots(lambda: TipAdapterF(s.images, s.labels, task.class_text, start["theta"], start["beta"], task.scale, task.bias),
                       s, task.val, Schedule.of(params), task.seed)
    keys = run.model.keys.detach().clone()
    state = {**zero_shot_state(task), "image_keys": keys, "text_keys": keys, "key_labels": s.labels}
    return Fitted("tip_adapter_f", state, {**start, "lr": run.lr, "epoch": run.epoch}, run.val_accuracy, run.history,
                  candidates=more(started.candidates, len(run.history)))
