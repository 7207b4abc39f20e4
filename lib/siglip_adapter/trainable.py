"""Trainable SigLIP-Adapter: eq. 6 with two small learned parts, trained on the shots only.

- projector: a residual linear map (D -> D, initialised to zero, so training starts from the
  training-free adapter) applied to the image feature before it meets the caption keys;
- latent space: a learnable offset per cache entry added to the caption keys (N*K x D).
alpha, theta and beta start from the training-free search; learning rate and epoch are chosen
by validation accuracy, never on test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import zero_shot_logits


class TrainableAdapter(nn.Module):
    def __init__(self, image_keys: torch.Tensor, caption_keys: torch.Tensor, key_labels: torch.Tensor, class_text: torch.Tensor,
                 alpha: float, theta: float, beta: float, scale: float = 1.0, bias: float = 0.0):
        """image_keys, caption_keys (N*K, D); key_labels (N*K,); class_text (N, D)."""
        super().__init__()
        d = image_keys.shape[1]
        self.register_buffer("image_keys", image_keys.clone())
        self.register_buffer("caption_keys", caption_keys.clone())
        self.register_buffer("onehot", F.one_hot(key_labels, class_text.shape[0]).float())
        self.register_buffer("class_text", class_text.clone())
        self.projector = nn.Linear(d, d)
        nn.init.zeros_(self.projector.weight)
        nn.init.zeros_(self.projector.bias)
        self.latent = nn.Parameter(torch.zeros_like(caption_keys))
        self.alpha, self.theta, self.beta, self.scale, self.bias = alpha, theta, beta, scale, bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (M, D) -> logits (M, N)."""
        query = F.normalize(images + self.projector(images), dim=-1)
        s = (1 - self.alpha) * images @ self.image_keys.T + self.alpha * query @ (self.caption_keys + self.latent).T
        fewshot = torch.exp(self.theta * (s - 1)) @ self.onehot
        return self.beta * fewshot + zero_shot_logits(images, self.class_text, self.scale, self.bias)


@dataclass
class TrainResult:
    model: TrainableAdapter
    lr: float
    epoch: int
    val_accuracy: float


def _val_acc(model, val_images, val_labels) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(val_images).argmax(-1) == val_labels).float().mean())


def fit_trainable(shot_images, shot_labels, caption_keys, class_text, val_images, val_labels, alpha, theta, beta,
                  lrs, epochs: int, weight_decay: float = 0.01, eval_every: int = 1, scale=1.0, bias=0.0, seed: int = 0) -> TrainResult:
    """Train on the shots with cross-entropy (full batch), for each learning rate; keep the
    (lr, epoch) with the best validation accuracy (epoch 0 = the training-free start; ties go to
    the earlier one)."""
    best: TrainResult | None = None
    for lr in lrs:
        torch.manual_seed(seed)
        model = TrainableAdapter(shot_images, caption_keys, shot_labels, class_text, alpha, theta, beta, scale, bias)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        acc = _val_acc(model, val_images, val_labels)
        if best is None or acc > best.val_accuracy:
            best = TrainResult(copy.deepcopy(model), float(lr), 0, acc)
        for epoch in range(1, epochs + 1):
            model.train()
            loss = F.cross_entropy(model(shot_images), shot_labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch % eval_every == 0 or epoch == epochs:
                acc = _val_acc(model, val_images, val_labels)
                if acc > best.val_accuracy:
                    best = TrainResult(copy.deepcopy(model), float(lr), epoch, acc)
    return best
