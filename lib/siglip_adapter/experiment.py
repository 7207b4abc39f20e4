"""What the notebooks report: zero-shot (03), the methods of ``methods.run`` at every K and seed
(04: those that do not train, 05: those that do; ``stage_rows`` over ``methods.loop.method_rows``),
the caption ablation, the adapter's sensitivity grid and the trained methods' learning curves.

Every row is one (method, shots, seed) with the accuracy on test, the validation accuracy that
chose the hyper-parameters, and the chosen values (``inputs.result_row``), so each number in
Table I traces back to a CSV row.
"""

from __future__ import annotations

import copy

import pandas as pd

from .methods import loop
from .config import seeds as seed_list
from .inputs import LOGIT_SCALES, Inputs, inputs_from, load_inputs  # noqa: F401  (the notebooks' entry points)
from .inputs import run_columns
from .inputs import result_row as _row
from .inputs import selected_on as _selected_on
from .paths import RUN_COLUMNS
from .methods.loop import accuracy, zero_shot_logits
from .methods.cache import adapter_logits, grid_accuracies
from .methods.trainable import fit_authors
from .methods.zero_shot_captions import caption_zero_shot_logits, search_caption_alpha


def zero_shot_rows(inp: Inputs, cfg: dict) -> pd.DataFrame:
    """Table I's first two columns: class-prompt zero-shot, and the second column as the
    protocol defines it (``methods.zero_shot_captions.method``): zero-shot on the image and its own
    caption with the caption weight chosen on validation, or the authors' fixed training-free
    cache on the smallest K's shots (no selection at all)."""
    ti, tc, tl = inp.split("test")
    vi, _, vl = inp.split("val")
    zs = lambda x: zero_shot_logits(x, inp.class_text, inp.scale, inp.bias)  # noqa: E731
    rows = [_row(cfg, "zero_shot", 0, None, accuracy(zs(ti), tl), accuracy(zs(vi), vl), "none")]
    z = cfg["methods"]["zero_shot_captions"]
    if z["method"] == "fixed_cache":
        k, f = min(cfg["shots"]), z["fixed"]
        for seed in seed_list(cfg):
            keys, caption_keys, labels = inp.shots(k, seed)
            logits = adapter_logits(ti, keys, caption_keys, labels, inp.class_text, f["alpha"], f["theta"], f["beta"], inp.scale, inp.bias)
            rows.append(_row(cfg, "zero_shot_captions", k, seed, accuracy(logits, tl), float("nan"), "fixed",
                             alpha=f["alpha"], theta=f["theta"], beta=f["beta"]))
        return pd.DataFrame(rows)
    if tc is None:  # captions.only_shots: test images have no captions to mix in
        return pd.DataFrame(rows)
    budget = int(cfg["validation"]["per_class"])
    for seed in (seed_list(cfg) if budget else [None]):
        vi, vc, vl = inp.validation(cfg, budget, seed) if budget else inp.split("val")
        alpha, val_acc = search_caption_alpha(vi, vc, vl, inp.class_text, z["alpha"], inp.scale, inp.bias)
        test = accuracy(caption_zero_shot_logits(ti, tc, inp.class_text, alpha, inp.scale, inp.bias), tl)
        rows.append(_row(cfg, "zero_shot_captions", 0, seed, test, val_acc, _selected_on(cfg), alpha=alpha))
    return pd.DataFrame(rows)


def stage_rows(inp: Inputs, cfg: dict, names: list[str], encoder=None, keep=None, store=None) -> pd.DataFrame:
    """The rows of the methods ``names`` on one run (``methods.loop.method_rows``: every K and seed,
    everything chosen on validation; ``store``: where finished cells are kept, so a killed run
    resumes), except that ``methods.trainable.method: authors`` (the ``paper``
    protocol's switch) runs the authors' trainable model, which needs the test labels and so is
    not a method (``authors_trainable_rows``)."""
    authors = "trainable" in names and cfg["methods"]["trainable"]["method"] == "authors"
    ours = [n for n in names if not (authors and n == "trainable")]
    frames = [loop.method_rows(inp, cfg, ours, encoder, keep, store)] if ours else []
    if authors:
        frames.append(authors_trainable_rows(inp, cfg))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def text_key_rows(inp: Inputs, cfg: dict, rows: pd.DataFrame, store=None) -> pd.DataFrame:
    """Is a caption worth it? The training-free adapter at every K and seed with each kind of text
    key (``methods.adapter.TEXT_KEYS``: the ``methods.adapter.keys`` parameter), every variant's hyper-parameters chosen on
    validation alike: the caption-key rows already computed (``rows``' adapter rows) plus
    class-name keys and no text keys."""
    frames = [rows[rows["method"] == "adapter"].dropna(axis=1, how="all").assign(keys="caption")]
    for keys in ("classname", "none"):
        variant = copy.deepcopy(cfg)
        variant["methods"]["adapter"]["keys"] = keys
        frames.append(loop.method_rows(inp, variant, ["adapter"], store=store).assign(keys=keys))
    return pd.concat(frames, ignore_index=True)


def authors_trainable_rows(inp: Inputs, cfg: dict) -> pd.DataFrame:
    """The authors' trainable model at every K and seed (``trainable.fit_authors``): its epoch is
    chosen on the TEST set and its accuracy is the max with a fixed re-scoring on test, so the row
    says ``selected_on: test``. This reproduces their number; it is not a valid estimate."""
    ti, _, tl = inp.split("test")
    rows = []
    for k, seed in loop.cells(cfg):
        keys, caption_keys, labels = inp.shots(k, seed)
        fit = fit_authors(keys, labels, caption_keys, inp.class_text, ti, tl, inp.scale, inp.bias, seed=seed)
        rows.append(_row(cfg, "trainable", k, seed, fit.test_accuracy, float("nan"), "test", epoch=fit.epoch, rescored=fit.rescored))
    return pd.DataFrame(rows)


def sensitivity_rows(inp: Inputs, cfg: dict, rows: pd.DataFrame, shots: int | None = None) -> pd.DataFrame:
    """How sensitive the training-free adapter is to alpha and theta: for each seed at ``shots``
    (default the largest K), the validation and test accuracy at every (alpha, theta) of the
    ``methods.adapter`` grid with beta held at the value validation chose for that seed (``rows``: the
    adapter's rows). An analysis of the grid, not a selection: nothing here is chosen."""
    k = max(cfg["shots"]) if shots is None else shots
    g = cfg["methods"]["adapter"]
    ti, _, tl = inp.split("test")
    chosen = rows[(rows["method"] == "adapter") & (rows["shots"] == k)].set_index("seed")
    out = []
    for seed, c in chosen.iterrows():
        keys, caption_keys, labels = inp.shots(k, int(seed))
        vi, _, vl = inp.validation(cfg, k, int(seed))
        beta = [float(c["beta"])]
        acc = {name: grid_accuracies(x, y, keys, caption_keys, labels, inp.class_text, g["alpha"], g["theta"], beta, inp.scale,
                                              inp.bias)[:, :, 0] for name, (x, y) in {"val_accuracy": (vi, vl), "accuracy": (ti, tl)}.items()}
        for i, alpha in enumerate(g["alpha"]):
            for j, theta in enumerate(g["theta"]):
                out.append({**run_columns(cfg), "shots": k, "seed": int(seed), "alpha": float(alpha),
                            "theta": float(theta), "beta": beta[0], "val_accuracy": float(acc["val_accuracy"][i, j]),
                            "accuracy": float(acc["accuracy"][i, j]), "chosen": bool(alpha == c["alpha"] and theta == c["theta"])})
    return pd.DataFrame(out)


class Curves:
    """A ``keep`` for ``methods.loop.method_rows`` that records the learning curve (every validation
    check: lr, epoch, training loss, validation accuracy) of each trained method at one K and seed:
    the largest K and the first seed unless named."""

    def __init__(self, cfg: dict, shots: int | None = None, seed: int | None = None):
        self.cfg, self.rows = cfg, []
        self.shots = max(cfg["shots"]) if shots is None else shots
        self.seed = seed_list(cfg)[0] if seed is None else seed

    def __call__(self, row: dict, history: list[dict]) -> None:
        if row["shots"] == self.shots and row["seed"] == self.seed:
            self.rows += [{**run_columns(self.cfg), "method": row["method"],
                           "shots": row["shots"], "seed": row["seed"], **h} for h in history]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=[*RUN_COLUMNS, "method", "shots", "seed", "lr", "epoch", "loss", "val_accuracy"])
