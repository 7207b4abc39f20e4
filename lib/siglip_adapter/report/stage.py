"""A stage's files and numbers: the per-seed rows (``<stage>.csv``), their summary and DVC metrics
(``<stage>.json``, ``stage_metrics``), every run's rows read back (``collect_rows``), and the
methods' labels, kinds and table order from their registry. A run is a dataset on a backbone under
a protocol (``RUN``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..atomic import write_atomic
from ..paths import RUN_COLUMNS, RunPaths


RUN = RUN_COLUMNS  # the columns that name a run

TABLE_COLUMNS = [*RUN, "method", "shots", "mean", "std", "n_seeds", "candidates", "search"]  # candidates: the most any seed's choice
                                                                                         # compared; search: how it chose (its rows')

SWEEP_EXCLUDED = ("published", "paper")  # protocols without a shots sweep (one K, one seed)


def _registry():
    """The methods' registry (``methods.registry``: each method's label, kind, place in tables and
    whether it is one of the paper's), imported on first use: it imports the method modules."""
    from ..methods import registry

    return registry


def label(method: str) -> str:
    return _registry().label(method)


def few_shot(method: str) -> bool:
    """Whether a method learns from the shots (the methods of the shots sweep and the ranking)."""
    return _registry().few_shot(method)


def paper_methods() -> list[str]:
    """The paper's own methods (its Table I columns 2 and 3 and eq. 6), in table order: drawn thick
    in the figures and named in the stage metrics; every other method is a baseline from the field."""
    return _registry().paper_methods()


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and seed count per run, method and shots, the most
    candidates a seed's choice compared and how it chose (``candidates``, ``search``; empty where
    the rows do not say)."""
    rows = rows.assign(**{c: rows[c] if c in rows else v for c, v in (("candidates", float("nan")), ("search", ""))})
    g = rows.groupby([*RUN, "method", "shots"], sort=False)
    out = g.agg(mean=("accuracy", "mean"), std=("accuracy", lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0),
                n_seeds=("accuracy", "count"), candidates=("candidates", "max"), search=("search", "first")).reset_index()
    out["order"] = out["method"].map({m: i for i, m in enumerate(_registry().ordered(out["method"].unique()))})
    return out.sort_values([*RUN, "order", "shots"]).drop(columns="order").reset_index(drop=True)[TABLE_COLUMNS]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A result table as CSV (6 significant digits), written atomically."""
    return write_atomic(Path(path), lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def stage_metrics(summary: pd.DataFrame) -> dict:
    """A stage's DVC metrics: flat keys, the same in every stage file, so that ``dvc metrics show``
    (one column per key over all files) stays a narrow table however many methods run; the full
    numbers stay in the stage CSV and ``table1.csv``. Mean test accuracy over seeds:

    - ``shots``: the stage's largest K (0 for zero-shot alone);
    - ``<method>`` for zero-shot and each of the paper's methods the stage ran (``paper_methods``):
      at its largest shots, and for the few-shot ones ``<method>_1_shot`` at K = 1 (the paper's
      Table I column 3) where run;
    - ``best`` and ``best_method``: the few-shot method with the highest mean at the largest K
      (does a baseline beat the paper's method?)."""
    out: dict = {"shots": int(summary["shots"].max()) if len(summary) else 0}
    for m in ("zero_shot", *paper_methods()):
        g = summary[summary["method"] == m].sort_values("shots")
        if len(g):
            out[m] = round(float(g["mean"].iloc[-1]), 6)
            if few_shot(m) and (g["shots"] == 1).any():
                out[f"{m}_1_shot"] = round(float(g.loc[g["shots"] == 1, "mean"].iloc[0]), 6)
    top = summary[summary["method"].map(few_shot).astype(bool) & (summary["shots"] == out["shots"])]
    if out["shots"] > 0 and len(top):
        best = top.loc[top["mean"].idxmax()]  # the first of a tie, in table order
        out.update(best=round(float(best["mean"]), 6), best_method=str(best["method"]))
    return out


def write_stage(rows: pd.DataFrame, csv_path: Path, json_path: Path) -> pd.DataFrame:
    """Write a stage's per-seed rows and its metrics (``stage_metrics``); returns the summary."""
    write_csv(rows, csv_path)
    summary = summarise(rows)
    metrics = stage_metrics(summary)
    write_atomic(Path(json_path), lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    return summary


def shots_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A stage summary as method x shots (accuracy in %, mean over seeds), for a notebook."""
    return summary.pivot_table(index="method", columns="shots", values="mean", sort=False).mul(100).round(1)


STAGE_FILES = ("03_zero_shot", "04_adapter", "05_trainable")

SENSITIVITY_FILE = "04_sensitivity"  # the adapter's accuracy over alpha x theta at the chosen beta, per run

CURVE_FILE = "05_curves"  # the trained methods' learning curves at the largest K and the first seed, per run


def run_dir(results_root: Path, dataset: str, backbone: str, protocol: str) -> Path:
    """A run's results folder under ``results_root`` (``paths.RunPaths.results`` of that output base)."""
    return RunPaths(Path(results_root).parent, dataset, "", protocol, backbone).results


def collect_rows(results_root: Path, datasets: list[str], protocols: list[str], backbones: list[str], stages=STAGE_FILES) -> pd.DataFrame:
    """Every dataset x backbone x protocol run's ``<stage>.csv``: the stages' per-seed rows by
    default, or any per-run file named in ``stages`` (sensitivity, curves, text keys); a missing one
    is an error."""
    frames = []
    for ds in datasets:
        for bb in backbones:
            for proto in protocols:
                for stage in stages:
                    path = run_dir(results_root, ds, bb, proto) / f"{stage}.csv"
                    if not path.is_file():
                        raise FileNotFoundError(f"{path}: missing; run notebook {stage[:2]} for {ds} on {bb} under protocol {proto}")
                    frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def runs_of(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (dataset, backbone, protocol) runs of a frame, in order of appearance."""
    return list(dict.fromkeys(zip(*(frame[c] for c in RUN))))


def run_label(frame: pd.DataFrame, dataset: str, backbone: str, protocol: str) -> str:
    """"dataset (protocol)", with the backbone when the frame holds more than one."""
    several = frame["backbone"].nunique() > 1
    return f"{dataset} ({backbone}, {protocol})" if several else f"{dataset} ({protocol})"


def _in_run(frame: pd.DataFrame, dataset: str, backbone: str, protocol: str) -> pd.DataFrame:
    return frame[(frame["dataset"] == dataset) & (frame["backbone"] == backbone) & (frame["protocol"] == protocol)]


TEXT_KEY_FILE = "04_text_keys"  # 04_adapter's caption ablation rows, per run


def _method_order(methods) -> list[str]:
    """Methods in table order, then any other (a method no module declares) by name."""
    return _registry().ordered(methods)


def has_sweep(rows: pd.DataFrame) -> bool:
    """Whether a run's rows sweep shots (its protocol is not one of SWEEP_EXCLUDED's single-K ones)."""
    return bool(len(rows)) and not rows["protocol"].isin(SWEEP_EXCLUDED).all()
