"""The field's few-shot methods behind one interface, run by one K x seed loop.

A method is a module with two functions: ``fit(task, params) -> Fitted`` sees one K-shot sample
(``Task.shots``), the protocol's validation images for that K and seed (``Task.val``) and the class
prompts, chooses its hyper-parameters on validation only, and returns the tensors it needs
(``Fitted.state``) with its choice; ``score(state, chosen, images) -> logits`` scores any images
from them, so a fitted method saves to a file and loads back (``siglip_adapter.cards``). The test
split never reaches ``fit``. ``method_rows`` is the loop over K and seeds for every method
named in ``methods.run`` (params/defaults.yaml); each row carries the method's chosen
hyper-parameters. Adding a method is one module here (``@register("name", score)``) plus its
``methods.<name>`` parameters. A method that starts from another's validation choice (Tip-Adapter-F
from Tip-Adapter, the trainable adapter from the training-free one) names it (``start=``): its
params then carry the other's under ``start`` and ``Task.fitted`` fits that one once per task.
Methods that train (``trained=True``) run in 05_trainable, the others in 04_adapter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

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
    classnames: list[str] | None = None  # the dataset's class names in label order
    encoder: object = None  # the frozen dual encoder, for methods that train through its text tower (CoOp)
    _fitted: dict = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return self.class_text.shape[0]

    def zero_shot(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_of(zero_shot_state(self), images)

    def fitted(self, name: str, params: dict) -> "Fitted":
        """Method ``name`` fitted on this task, once (a later method that starts from it reuses it)."""
        if name not in self._fitted:
            self._fitted[name] = method(name)(self, params)
        return self._fitted[name]


@dataclass
class Fitted:
    """A fitted method: its tensors (``state``), the hyper-parameters validation chose, and the
    validation accuracy that chose them; ``logits(images)`` -> (M, N) through the method's
    ``score``."""

    method: str
    state: dict[str, torch.Tensor]
    chosen: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)  # trained methods: the learning curve (``TrainResult.history``)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scorer(self.method)(self.state, self.chosen, images)

    def accuracy(self, data: Labelled) -> float:
        return adapters.accuracy(self.logits(data.images), data.labels)


class Method(NamedTuple):
    fit: Callable[[Task, dict], Fitted]
    score: Callable[[dict, dict, torch.Tensor], torch.Tensor]
    start: str | None  # the method whose validation choice this one starts from
    trained: bool  # trains on the shots (05_trainable) rather than computing in closed form (04_adapter)


METHODS: dict[str, Method] = {}
MODULES = ("zero_shot", "linear_probe", "tip_adapter", "tip_adapter_f", "clip_adapter", "idea", "gda", "coop", "adapter", "trainable")


def register(name: str, score: Callable[[dict, dict, torch.Tensor], torch.Tensor], start: str | None = None, trained: bool = False):
    """Register a method's ``fit`` (decorated) with its ``score(state, chosen, images)``."""

    def deco(fit):
        METHODS[name] = Method(fit, score, start, trained)
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
    return _lookup(name).fit


def scorer(name: str) -> Callable[[dict, dict, torch.Tensor], torch.Tensor]:
    """The ``score(state, chosen, images)`` of a method by name."""
    return _lookup(name).score


def names(cfg: dict, trained: bool | None = None) -> list[str]:
    """The methods ``methods.run`` names, in its order; ``trained``: only those that train (True)
    or only those that do not (False)."""
    out = list(cfg["methods"]["run"])
    return out if trained is None else [n for n in out if _lookup(n).trained == trained]


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
    """A method's parameters: ``methods.<name>``, else the top-level section of its name; with the
    parameters of the method it starts from under ``start``."""
    params = dict(cfg["methods"].get(name) or cfg.get(name) or {})
    start = _lookup(name).start
    if start is not None:
        params["start"] = params_of(cfg, start)
    return params


def cells(cfg: dict) -> list[tuple[int, int]]:
    """The (K, seed) pairs of a run: every ``shots`` value with every seed."""
    from ..config import seeds as seed_list

    return [(k, seed) for k in cfg["shots"] for seed in seed_list(cfg)]


def task_for(inp, cfg: dict, k: int, seed: int, encoder=None) -> Task:
    """The task of one K and seed of a run (``inputs.Inputs``)."""
    return Task(Labelled(*inp.shots(k, seed)), Labelled(*inp.validation(cfg, k, seed)), inp.class_text, inp.scale, inp.bias, seed,
                inp.classnames, encoder)


def method_rows(inp, cfg: dict, names: list[str] | None = None, encoder=None, keep=None) -> pd.DataFrame:
    """Every named method (default ``methods.run``) at every K and seed: fitted on the shots with
    its hyper-parameters chosen on the protocol's validation set, then scored once on test. One
    row per method, K and seed, with the chosen hyper-parameters. ``encoder``: the frozen encoder
    for methods that train through its text tower (CoOp). ``keep(name, k, seed, fitted, test
    accuracy)`` sees every fitted method (``experiment.Curves`` keeps learning curves with it)."""
    from tqdm.auto import tqdm

    from ..inputs import result_row, selected_on

    names = list(cfg["methods"]["run"] if names is None else names)
    params = {n: params_of(cfg, n) for n in names}
    test = Labelled(*inp.split("test"))
    rows = []
    for k, seed in tqdm(cells(cfg), desc=f"{', '.join(names)}: K x seeds", unit="cell"):
        task = task_for(inp, cfg, k, seed, encoder)
        for name in names:
            fitted = task.fitted(name, params[name])
            acc = fitted.accuracy(test)
            rows.append(result_row(cfg, name, k, seed, acc, fitted.val_accuracy, selected_on(cfg), **fitted.chosen))
            if keep is not None:
                keep(name, k, seed, fitted, acc)
    return pd.DataFrame(rows)
