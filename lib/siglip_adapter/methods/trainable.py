"""The trainable SigLIP-Adapter (``siglip_adapter.trainable``): eq. 6 with a projector on the query
and learnable offsets on the cache keys, started from the training-free adapter's validation
choice of (alpha, theta, beta) on the same task, trained on the shots with AdamW, a cosine
schedule and early stopping; learning rate and epoch chosen on validation (``trainable``). The
authors' scripts picked the epoch on the test set and then took the larger of that and a fixed
re-scoring on test (``trainable.method: authors``, the ``author_trainable`` switch, run by
``experiment.authors_trainable_rows`` because it needs the test labels); this method never does."""

from __future__ import annotations

import torch.nn.functional as F

from ..trainable import fit_trainable, trainable_logits
from . import Fitted, Task, register, zero_shot_state


def score(state, chosen, images):
    return trainable_logits(images, state["projector_weight"], state["projector_bias"], state["image_keys"], state["caption_keys"],
                            state["latent"], F.one_hot(state["key_labels"], state["class_text"].shape[0]).float(), state["class_text"],
                            chosen["alpha"], chosen["theta"], chosen["beta"], float(state["scale"]), float(state["bias"]))


@register("trainable", score, start="adapter", trained=True)
def fit(task: Task, params: dict) -> Fitted:
    if params.get("method", "ours") != "ours":
        raise ValueError(f"trainable.method '{params['method']}' chooses on the test set; experiment.authors_trainable_rows runs it")
    c = task.fitted("adapter", params["start"]).chosen
    s = task.shots
    if s.captions is None:
        raise ValueError("trainable: the shots have no captions")
    run = fit_trainable(s.images, s.labels, s.captions, task.class_text, task.val.images, task.val.labels, c["alpha"], c["theta"],
                        c["beta"], params["lr"], params["epochs"], params["weight_decay"], params["eval_every"], task.scale, task.bias,
                        seed=task.seed, patience=params["patience"])
    m = run.model
    state = {**zero_shot_state(task), "image_keys": s.images, "caption_keys": s.captions, "key_labels": s.labels,
             "projector_weight": m.projector.weight.detach().clone(), "projector_bias": m.projector.bias.detach().clone(),
             "latent": m.latent.detach().clone()}
    return Fitted("trainable", state, {**c, "lr": run.lr, "epoch": run.epoch}, run.val_accuracy, run.history)
