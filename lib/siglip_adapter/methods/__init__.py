"""The field's few-shot methods behind one interface, run by one K x seed loop.

A method is a module with two functions: ``fit(task, params) -> Fitted`` sees one K-shot sample
(``Task.shots``), the protocol's validation images for that K and seed (``Task.val``) and the class
prompts, chooses its hyper-parameters on validation only, and returns the tensors it needs
(``Fitted.state``) with its choice; ``score(state, chosen, images) -> logits`` scores any images
from them, so a fitted method saves to a file and loads back (``siglip_adapter.cards``). The test
split never reaches ``fit``. ``method_rows`` is the loop over K and seeds for every method
named in ``methods.run`` (params/defaults.yaml); each row carries the method's chosen
hyper-parameters. Adding a method is one module here (``@register("name")``) plus its
``methods.<name>`` parameters.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch

from .. import adapters


@dataclass
class Labelled:
    """Image features, their captions' features (None where not captioned) and labels."""

    images: torch.Tensor  # (M, D)
    captions: torch.Tensor | None  # (M, D)
    labels: torch.Tensor  # (M,)


@dataclass
class Task:
    """What a method is fitted on for one K and seed."""

    shots: Labelled  # the K-shot sample: N*K images with their captions
    val: Labelled  # what chooses the hyper-parameters
    class_text: torch.Tensor  # (N, D) class-prompt features
    scale: float = 1.0  # the zero-shot logit form: scale * cos + bias
    bias: float = 0.0
    seed: int = 0

    @property
    def n_classes(self) -> int:
        return self.class_text.shape[0]

    def zero_shot(self, images: torch.Tensor) -> torch.Tensor:
        return adapters.zero_shot_logits(images, self.class_text, self.scale, self.bias)


@dataclass
class Fitted:
    """A fitted method: its tensors (``state``), the hyper-parameters validation chose, and the
    validation accuracy that chose them; ``logits(images)`` -> (M, N) through the method's
    ``score``."""

    method: str
    state: dict[str, torch.Tensor]
    chosen: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scorer(self.method)(self.state, self.chosen, images)

    def accuracy(self, data: Labelled) -> float:
        return adapters.accuracy(self.logits(data.images), data.labels)


METHODS: dict[str, tuple[Callable[[Task, dict], Fitted], Callable]] = {}
MODULES = ("zero_shot", "linear_probe", "tip_adapter", "tip_adapter_f", "clip_adapter", "idea", "gda", "adapter")


def register(name: str, score: Callable[[dict, dict, torch.Tensor], torch.Tensor]):
    """Register a method's ``fit`` (decorated) with its ``score(state, chosen, images)``."""
    def deco(fit):
        METHODS[name] = (fit, score)
        return fit

    return deco


def _lookup(name: str):
    for module in MODULES:
        if name in METHODS:
            break
        importlib.import_module(f"{__name__}.{module}")
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known: {sorted(METHODS)}")
    return METHODS[name]


def method(name: str) -> Callable[[Task, dict], Fitted]:
    """The ``fit`` of a method by name (its module is imported on first use)."""
    return _lookup(name)[0]


def scorer(name: str) -> Callable[[dict, dict, torch.Tensor], torch.Tensor]:
    """The ``score(state, chosen, images)`` of a method by name."""
    return _lookup(name)[1]


def zero_shot_state(task: "Task") -> dict[str, torch.Tensor]:
    """The class prompts and the logit form, which every method that adds to zero-shot keeps."""
    return {"class_text": task.class_text, "scale": torch.tensor(float(task.scale)), "bias": torch.tensor(float(task.bias))}


def zero_shot_of(state: dict, images: torch.Tensor) -> torch.Tensor:
    return adapters.zero_shot_logits(images, state["class_text"], float(state["scale"]), float(state["bias"]))


def best(candidates, evaluate) -> tuple[object, float]:
    """The first candidate with the highest ``evaluate(candidate)`` (validation accuracy): ties go
    to the earlier one in grid order."""
    top, top_acc = None, -1.0
    for c in candidates:
        acc = evaluate(c)
        if acc > top_acc:
            top, top_acc = c, acc
    return top, top_acc


def params_of(cfg: dict, name: str) -> dict:
    """A method's parameters: ``methods.<name>``, else the top-level section of its name."""
    return cfg["methods"].get(name) or cfg.get(name) or {}


def method_rows(inp, cfg: dict, names: list[str] | None = None) -> pd.DataFrame:
    """Every named method (default ``methods.run``) at every K and seed: fitted on the shots with
    its hyper-parameters chosen on the protocol's validation set, then scored once on test. One
    row per method, K and seed, with the chosen hyper-parameters."""
    from ..config import seeds as seed_list
    from ..experiment import _row, _selected_on

    names = list(names or cfg["methods"]["run"])
    fits = {n: method(n) for n in names}
    test = Labelled(*inp.split("test"))
    rows = []
    for k in cfg["shots"]:
        for seed in seed_list(cfg):
            task = Task(Labelled(*inp.shots(k, seed)), Labelled(*inp.validation(cfg, k, seed)), inp.class_text, inp.scale, inp.bias, seed)
            for name, fit in fits.items():
                fitted = fit(task, params_of(cfg, name))
                rows.append(_row(cfg, name, k, seed, fitted.accuracy(test), fitted.val_accuracy, _selected_on(cfg), **fitted.chosen))
    return pd.DataFrame(rows)
