"""Per-stage result files, Table I and the accuracy-vs-shots plot.

Stage files: ``results/runs/<dataset>/<stage>.csv`` (one row per method, shots and seed) and
``<stage>.json`` (DVC metrics: a few headline numbers, ``stage_metrics``). Table I:
``results/table1.csv`` (dataset, backbone, protocol, method, shots, mean, std, n_seeds; accuracy as
a fraction) and ``results/table1.md`` for people. A run is a dataset on a backbone under a
protocol (``RUN``); the figures and tables name the backbone where more than one ran.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .atomic import write_atomic
from .paths import RUN_COLUMNS, RunPaths

def _plotting():
    """(pyplot, seaborn) on the Agg backend, imported on first use: the stages that only write
    tables do not pay for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


RUN = RUN_COLUMNS  # the columns that name a run
TABLE_COLUMNS = [*RUN, "method", "shots", "mean", "std", "n_seeds"]
PUBLISHED_BACKBONE = "siglip-b16"  # the paper's: open_clip's ViT-B-16-SigLIP, google/siglip-base-patch16-224's weights
SWEEP_EXCLUDED = ("published", "paper")  # protocols without a shots sweep (one K, one seed)


def _registry():
    """The methods' registry (``methods.registry``: each method's label, kind, place in tables and
    whether it is one of the paper's), imported on first use: it imports the method modules."""
    from .methods import registry

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
    """Mean, sample std (0 for one seed) and seed count per run, method and shots."""
    g = rows.groupby([*RUN, "method", "shots"], sort=False)["accuracy"]
    out = g.agg(mean="mean", std=lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0, n_seeds="count").reset_index()
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


def published_rows(path: Path, datasets: list[str] | None = None) -> pd.DataFrame:
    """The paper's own Table I numbers (protocol ``published``) for ``datasets`` (None: all five)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    rows = []
    for ds in data if datasets is None else datasets:
        for method, by_shots in (data.get(ds) or {}).items():
            for shots, value in (by_shots or {}).items():
                if value is not None:
                    rows.append({"dataset": ds, "backbone": PUBLISHED_BACKBONE, "protocol": "published", "method": method, "shots": int(shots),
                                 "mean": float(value), "std": float("nan"), "n_seeds": float("nan")})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table1(rows: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Our summaries of every run, then the published numbers (protocol ``published``)."""
    ours = summarise(rows)
    return pd.concat([ours, published], ignore_index=True) if len(published) else ours


def _cell(mean: float, std: float, n) -> str:
    if pd.isna(std) or pd.isna(n):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


PROTOCOL_ORDER = ["published", "paper", "corrected", "realistic"]

# What each Table I column measures under each protocol (one line per column in table1.md).
COLUMN_MEANINGS = {
    "Zero-shot": {
        "published / paper": "100 x cosine to one prompt per class, images bilinear-resized to 224 with ImageNet mean/std, the "
                             "authors' templates (Pets, Caltech101: the caption instruction) and uncleaned names, one seed-42 split",
        "corrected / realistic": "cosine to the field's template with cleaned class names, the backbone's own preprocessing "
                                 "(SigLIP's: bicubic, mean = std = 0.5, which the offline encoder copies), the 70/20/10 stratified split",
    },
    "Column 2": {
        "published / paper": "not zero-shot: a training-free cache on the K shots (image and caption keys averaged, fixed "
                             "sharpness 2 and weight 0.5 against 100 x cosine), captions only for the shots, asked with the class name",
        "corrected": "zero-shot with captions: each test image's own caption mixed in, the caption weight chosen on the whole validation split",
        "realistic": "as corrected, the caption weight chosen on 4 labelled validation images per class (per seed)",
    },
    "Column 3": {
        "published / paper": "the authors' trainable model after 10 epochs at batch 2, the epoch chosen on the test set, then the max "
                             "with a fixed re-scoring on test: optimistic by construction (EuroSAT: 4 shots)",
        "corrected": "the kit's trainable adapter (projector + latent keys), learning rate and epoch chosen on the whole validation split",
        "realistic": "as corrected, everything chosen on min(K, 4) labelled validation images per class (CoOp's few-shot validation)",
    },
}


def _pick(g: pd.DataFrame, method: str, shots: int | None) -> pd.Series | None:
    """The row of ``method`` at ``shots`` (None: the smallest shots the run has)."""
    hit = g[g["method"] == method]
    if shots is not None:
        hit = hit[hit["shots"] == shots]
    return hit.sort_values("shots").iloc[0] if len(hit) else None


TABLE1_TITLE = "# Table I: zero-shot, the paper's columns 2 and 3, and the training-free adapter"
OURS_HEADING = "## This run"
PUBLISHED_HEADING = "## Published in the paper (not rerun here)"


def _table1_rows(table: pd.DataFrame, shots: int) -> list[str]:
    """Table I's markdown rows, a line per run (dataset, then protocol in PROTOCOL_ORDER)."""
    head = ["dataset", "backbone", "protocol", "Zero-shot", "Column 2 (\"with captions zero-shot\")", "Column 3 (\"SigLIP-Adapter 1-shot\")",
            f"Training-free adapter, {shots}-shot"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    table = table.assign(_o=table["protocol"].map(order).fillna(len(order))).sort_values(["dataset", "_o", "backbone"], kind="stable")
    for (ds, bb, proto), g in table.groupby(RUN, sort=False):
        cells = []
        for method, k in (("zero_shot", 0), ("zero_shot_captions", None), ("trainable", None if proto in ("paper", "published") else shots),
                          ("adapter", shots)):
            r = _pick(g, method, k)
            if r is None:
                cells.append("–")
                continue
            note = f" ({int(r['shots'])}-shot)" if method != "zero_shot" and k is None and r["shots"] not in (0, shots) else ""
            note = " (1-shot cache)" if method == "zero_shot_captions" and r["shots"] == 1 else note
            cells.append(_cell(r["mean"], r["std"], r["n_seeds"]) + note)
        lines.append("| " + " | ".join([ds, bb, proto] + cells) + " |")
    return lines


def table1_markdown(table: pd.DataFrame, shots: int = 1, text_keys: pd.DataFrame | None = None) -> str:
    """Table I as markdown, under a title: this run's rows (a line per dataset x backbone x
    protocol with the paper's three columns and the training-free adapter at ``shots``), then in a
    section of their own the paper's published numbers (protocol ``published``, not rerun), then
    what each column measures under each protocol, then the shots sweep of every method (accuracy in
    %, mean ± std over seeds) and the ranking, then (``text_keys``: ``text_key_summary``) what the
    captions add to the adapter."""
    ours, published = table[table["protocol"] != "published"], table[table["protocol"] == "published"]
    out = (f"{TABLE1_TITLE}\n\nTest accuracy in %, mean ± std over seeds where a run has several. The columns are the paper's "
           "Table I; what each measures depends on the protocol (below).\n\n")
    if len(ours):
        out += f"{OURS_HEADING}\n\n" + "\n".join(_table1_rows(ours, shots)) + "\n\n"
    if len(published):
        out += (f"{PUBLISHED_HEADING}\n\nThe paper's own numbers (`params/paper_table1.yaml`, its backbone {PUBLISHED_BACKBONE}, one "
                "split, no seeds), for comparison: this kit did not produce them.\n\n" + "\n".join(_table1_rows(published, shots)) + "\n\n")
    out += "## What each column measures\n\n"
    for col, by in COLUMN_MEANINGS.items():
        out += f"- **{col}**: " + "; ".join(f"*{p}*: {text}" for p, text in by.items()) + ".\n"
    sweep = table[table["method"].map(few_shot).astype(bool) & ~table["protocol"].isin(SWEEP_EXCLUDED)]
    if len(sweep):
        ks = sorted(sweep["shots"].unique())
        out += "\n## Every method against shots\n\nAccuracy (%), mean ± std over seeds, every hyper-parameter chosen on validation:\n\n"
        out += "| dataset | backbone | protocol | method | " + " | ".join(f"{k}-shot" for k in ks) + " | seeds |\n"
        out += "|" + "---|" * (5 + len(ks)) + "\n"
        for (ds, bb, proto, m), g in sweep.groupby([*RUN, "method"], sort=False):
            by = g.set_index("shots")
            cells = [_cell(*by.loc[k, ["mean", "std", "n_seeds"]]) if k in by.index else "–" for k in ks]
            out += f"| {ds} | {bb} | {proto} | {label(m)} | " + " | ".join(cells) + f" | {int(g['n_seeds'].max())} |\n"
    if len(sweep):
        out += ranking_markdown(ranking(table))
    if text_keys is not None and len(text_keys):
        out += text_key_markdown(text_keys)
    return out


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, backbone, protocol) with a shots sweep: each few-shot method's rank among the methods
    at every K (1 = best mean accuracy; ties share the mean rank), averaged over K, with its mean
    accuracy over K and at the largest K; best mean rank first."""
    sweep = table[table["method"].map(few_shot).astype(bool) & ~table["protocol"].isin(SWEEP_EXCLUDED)].copy()
    sweep["rank"] = sweep.groupby([*RUN, "shots"])["mean"].rank(ascending=False, method="average")
    top = sweep["shots"].max()
    out = sweep.groupby([*RUN, "method"], sort=False).agg(
        mean_rank=("rank", "mean"), mean_accuracy=("mean", "mean"),
        at_max_shots=("mean", lambda m: float(m[sweep.loc[m.index, "shots"] == top].mean()))).reset_index()
    return out.sort_values([*RUN, "mean_rank", "method"], kind="stable").reset_index(drop=True)


def ranking_markdown(ranks: pd.DataFrame) -> str:
    """The ranking per dataset: one column pair per protocol (per backbone and protocol where more
    than one backbone ran): mean rank over K, mean accuracy over K."""
    several = ranks["backbone"].nunique() > 1
    ranks = ranks.assign(protocol=ranks["backbone"] + " " + ranks["protocol"]) if several else ranks
    protocols = list(dict.fromkeys(ranks["protocol"]))
    out = ("\n## Ranking\n\nPer dataset, each method's rank among the few-shot methods at every K (1 = best), averaged over K, "
           "and its accuracy (%) averaged over K; ordered by the first protocol's mean rank.\n")
    for ds, g in ranks.groupby("dataset", sort=False):
        by = g.set_index(["protocol", "method"])
        order = list(g[g["protocol"] == protocols[0]]["method"]) or list(dict.fromkeys(g["method"]))
        out += f"\n**{ds}**\n\n| method | " + " | ".join(f"{p}: mean rank | {p}: mean acc." for p in protocols) + " |\n"
        out += "|" + "---|" * (1 + 2 * len(protocols)) + "\n"
        for m in order:
            cells = [f"{by.loc[(p, m), 'mean_rank']:.1f} | {100 * by.loc[(p, m), 'mean_accuracy']:.1f}" if (p, m) in by.index else "– | –"
                     for p in protocols]
            out += f"| {label(m)} | " + " | ".join(cells) + " |\n"
    return out


TEXT_KEY_FILE = "04_text_keys"  # 04_adapter's caption ablation rows, per run


def read_text_keys(results_root: Path, datasets: list[str], protocols: list[str], backbones: list[str]) -> pd.DataFrame:
    """The caption ablation rows (the adapter's ``text_keys`` table, ``methods.adapter``) of every run."""
    return collect_rows(results_root, datasets, protocols, backbones, stages=(TEXT_KEY_FILE,))


def text_key_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run and shots: mean test accuracy of the adapter with each kind of text
    key (caption, classname, none), and the caption keys' gain over no text keys and over
    class-name keys, paired per seed (mean and sample std over seeds)."""
    piv = rows.pivot_table(index=[*RUN, "shots", "seed"], columns="keys", values="accuracy", sort=False).reset_index()
    piv["vs_none"] = piv["caption"] - piv["none"]
    piv["vs_classname"] = piv["caption"] - piv["classname"]
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    return piv.groupby([*RUN, "shots"], sort=False).agg(
        caption=("caption", "mean"), classname=("classname", "mean"), none=("none", "mean"), vs_none=("vs_none", "mean"),
        vs_none_std=("vs_none", std), vs_classname=("vs_classname", "mean"), vs_classname_std=("vs_classname", std),
        n_seeds=("caption", "count")).reset_index()


def text_key_sentence(dataset: str, backbone: str, protocol: str, summary: pd.DataFrame) -> str:
    """What the captions add to the adapter on one run, generated from its summary."""
    g = _in_run(summary, dataset, backbone, protocol).sort_values("shots")
    lo, hi = g.iloc[0], g.iloc[-1]
    ends = f"{int(lo['shots'])}-shot {_points(lo['vs_none'])}" + (f", {int(hi['shots'])}-shot {_points(hi['vs_none'])}" if len(g) > 1 else "")
    # Beyond noise: a paired gain more than two standard errors (std / sqrt(seeds)) from zero.
    beyond = [f"{int(r.shots)} ({_points(r.vs_none)})" for r in g.itertuples()
              if r.n_seeds > 1 and abs(r.vs_none) > 2 * r.vs_none_std / r.n_seeds ** 0.5]
    noise = (f"beyond two standard errors at K = {', '.join(beyond)}" if beyond else
             "within two standard errors of zero at every K" if (g["n_seeds"] > 1).all() else "one seed: no error bar")
    name = run_label(summary, dataset, backbone, protocol).replace(dataset, f"**{dataset}**", 1)
    return (f"{name}: caption keys against no text keys {_points(g['vs_none'].mean())} points on average over "
            f"K ({ends}; {noise}); against class-name keys {_points(g['vs_classname'].mean())}.")


def text_key_markdown(summary: pd.DataFrame) -> str:
    """The caption ablation for table1.md: a sentence per run and the accuracy of each kind of
    text key at every K with the caption keys' paired gains."""
    out = ("\n## Is a caption worth it?\n\nThe training-free adapter with the shots' caption features as text keys (the "
           "paper's), with each shot's class prompt in their place, and with no text keys (alpha = 0, Tip-Adapter's cache); "
           "every variant's alpha, theta and beta chosen on validation at every K, the test split scored once. Accuracy in %; "
           "gains in points, paired per seed (mean ± std).\n\n")
    out += "\n".join(f"- {text_key_sentence(*run, summary)}" for run in runs_of(summary)) + "\n\n"
    out += "| dataset | backbone | protocol | shots | caption keys | class-name keys | no text keys | caption − none | caption − class-name | seeds |\n"
    out += "|" + "---|" * 10 + "\n"
    for r in summary.itertuples(index=False):
        out += (f"| {r.dataset} | {r.backbone} | {r.protocol} | {int(r.shots)} | {100 * r.caption:.1f} | {100 * r.classname:.1f} | {100 * r.none:.1f} | "
                f"{_points(r.vs_none)} ± {100 * r.vs_none_std:.1f} | {_points(r.vs_classname)} ± {100 * r.vs_classname_std:.1f} | {int(r.n_seeds)} |\n")
    return out


# Figures: the paper's methods in colours of their own, drawn thick; every other method thin, from a palette
# without those colours (then with line styles, so 16+ methods stay apart); legends below the panels.
PAPER_COLOURS = ("#9467bd", "#000000", "#d62728", "#e07b00", "#006d5b")  # the paper's methods in table order: purple, black, red, ...
OTHER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]  # tab10 less red, purple, grey
OTHER_DASHES = ["-", "--", ":", "-."]


def _method_order(methods) -> list[str]:
    """Methods in table order, then any other (a method no module declares) by name."""
    return _registry().ordered(methods)


def _line_styles(methods) -> dict:
    """{method: matplotlib line keywords}: the paper's thick in their colours, the others thin."""
    paper = dict(zip(paper_methods(), PAPER_COLOURS))
    out, others = {}, [m for m in _method_order(methods) if m not in paper and m != "zero_shot"]
    for m in methods:
        if m in paper:
            out[m] = {"color": paper[m], "lw": 2.6, "marker": "o", "ms": 5, "zorder": 4}
    for i, m in enumerate(others):
        out[m] = {"color": OTHER_COLOURS[i % len(OTHER_COLOURS)], "ls": OTHER_DASHES[i // len(OTHER_COLOURS) % len(OTHER_DASHES)],
                  "lw": 1.1, "marker": ".", "ms": 4, "alpha": 0.85, "zorder": 2}
    if "zero_shot_captions" in out:  # a level, not a curve: no markers
        out["zero_shot_captions"] = {"color": paper["zero_shot_captions"], "ls": "-.", "lw": 2.6, "zorder": 3}
    out["zero_shot"] = {"color": "dimgrey", "ls": "--", "lw": 1.2, "zorder": 5}  # thin, on top of an equal zero-shot + captions
    return out


def _legend_below(fig, handles: list, labels: list[str], title: str | None = None, width_per_column: float = 2.7):
    """One legend for the whole figure, under its panels (outside every axes); needs a figure made
    with ``layout="constrained"``."""
    import textwrap

    ncol = max(1, min(len(labels), int(fig.get_figwidth() // width_per_column)))
    title = title and textwrap.fill(title, width=int(fig.get_figwidth() * 13))  # a long title wraps to the figure's width
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, title=title, title_fontsize=8, frameon=False)


def plot_shots(rows: pd.DataFrame, path: Path | None = None):
    """Accuracy against shots for every few-shot method (mean over seeds), a panel per dataset
    (columns) and backbone x protocol with a sweep (rows): the paper's methods thick with a ±1 std
    band over seeds, the others thin without one; zero-shot and zero-shot with captions as
    horizontal lines; one legend under the panels."""
    plt, sns = _plotting()
    from matplotlib.lines import Line2D

    ours = rows[~rows["protocol"].isin(SWEEP_EXCLUDED)].assign(accuracy=lambda r: 100 * r["accuracy"])
    datasets, settings = list(dict.fromkeys(ours["dataset"])), list(dict.fromkeys(zip(ours["backbone"], ours["protocol"])))
    methods = _method_order(ours["method"].unique())
    style, paper = _line_styles(methods), set(paper_methods())
    fig, axes = plt.subplots(len(settings), len(datasets), figsize=(5.5 * len(datasets), 3.8 * len(settings) + 1.6), squeeze=False,
                             layout="constrained")
    for ax_row, (bb, proto) in zip(axes, settings):
        for ax, ds in zip(ax_row, datasets):
            d = _in_run(ours, ds, bb, proto)
            for m in methods:
                g = d[d["method"] == m].groupby("shots")["accuracy"]
                if not len(g):
                    continue
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                if not few_shot(m) or mean.index.max() == 0:  # no sweep: a level to beat
                    ax.axhline(mean.iloc[-1], **{k: v for k, v in style[m].items() if k not in ("marker", "ms")})
                    continue
                ax.plot(mean.index, mean.values, **style[m])
                if m in paper:
                    ax.fill_between(mean.index, mean - std, mean + std, color=style[m]["color"], alpha=0.15, lw=0, zorder=3)
            ax.set_xscale("log", base=2)
            ks = sorted(d.loc[d["shots"] > 0, "shots"].unique())
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set(title=run_label(ours, ds, bb, proto), xlabel="shots per class (K)", ylabel="test accuracy (%)")
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], **style[m]) for m in methods]
    paper_first = sorted(range(len(methods)), key=lambda i: methods[i] not in paper)
    _legend_below(fig, [handles[i] for i in paper_first], [label(methods[i]) for i in paper_first],
                  title="thick: the paper's methods (band: ±1 std over seeds); thin: the other methods (mean over seeds); "
                        "horizontal: the zero-shot methods (no shots)")
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def plot_sensitivity(sens: pd.DataFrame, path: Path | None = None):
    """The training-free adapter's test accuracy (%) over alpha x theta at the beta validation chose
    (mean over seeds at the largest K), a heat map per run with a sweep, laid out as the
    accuracy-vs-shots figure (a column per dataset, a row per backbone x protocol); the number in a
    cell is how many seeds' validation search chose it, which the figure's title says."""
    plt, sns = _plotting()
    sens = sens[~sens["protocol"].isin(SWEEP_EXCLUDED)]
    datasets, settings = list(dict.fromkeys(sens["dataset"])), list(dict.fromkeys(zip(sens["backbone"], sens["protocol"])))
    fig, axes = plt.subplots(len(settings), len(datasets), figsize=(5.2 * len(datasets), 4.4 * len(settings) + 0.4), squeeze=False,
                             layout="constrained")
    for ax, run in ((axes[i, j], (ds, bb, proto)) for i, (bb, proto) in enumerate(settings) for j, ds in enumerate(datasets)):
        d = _in_run(sens, *run)
        if d.empty:  # a dataset not run under this backbone x protocol
            ax.set_axis_off()
            continue
        acc = d.pivot_table(index="alpha", columns="theta", values="accuracy", aggfunc="mean").mul(100)
        picked = d.pivot_table(index="alpha", columns="theta", values="chosen", aggfunc="sum").astype(int)
        sns.heatmap(acc, annot=picked.astype(str).where(picked > 0, ""), fmt="", cmap="viridis", ax=ax,
                    cbar_kws={"label": "test accuracy (%), mean over seeds"})
        ax.set(title=f"{run_label(sens, *run)}, K = {int(d['shots'].max())}, {d['seed'].nunique()} seeds",
               xlabel="theta (sharpness)", ylabel="alpha (caption weight)")
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle("The training-free adapter over alpha x theta at the chosen beta.\nColour: test accuracy; "
                 "number in a cell: seeds whose validation search chose that cell", fontsize=11)  # two lines: fits two panels
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def plot_curves(curves: pd.DataFrame, path: Path | None = None):
    """Validation accuracy against epoch for each trained method (a line per learning rate, one
    colour per rate in every panel), a row per run with a sweep: the learning curves behind each
    chosen epoch."""
    plt, sns = _plotting()
    from matplotlib.lines import Line2D

    curves = curves[~curves["protocol"].isin(SWEEP_EXCLUDED)]
    runs = runs_of(curves)
    trained = _method_order(curves["method"].unique())
    rates = sorted(curves["lr"].unique())
    colours = dict(zip(rates, sns.color_palette("colorblind", len(rates))))
    fig, axes = plt.subplots(len(runs), len(trained), figsize=(3.4 * len(trained), 2.8 * len(runs) + 0.6), squeeze=False, sharey="row",
                             layout="constrained")
    for ax_row, run in zip(axes, runs):
        for ax, m in zip(ax_row, trained):
            d = _in_run(curves, *run)
            d = d[d["method"] == m]
            for lr, g in d.groupby("lr"):
                ax.plot(g["epoch"], 100 * g["val_accuracy"], marker=".", color=colours[lr])
            ax.set(title=f"{label(m)}\n{run_label(curves, *run)}, K = {int(d['shots'].max()) if len(d) else '?'}",
                   xlabel="epoch", ylabel="validation accuracy (%)" if ax is ax_row[0] else "")
            ax.title.set_fontsize(8)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    _legend_below(fig, [Line2D([], [], marker=".", color=colours[lr]) for lr in rates], [f"{lr:g}" for lr in rates],
                  title="learning rate", width_per_column=1.2)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def backbone_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Each few-shot method's gain over its own backbone's zero-shot at the largest K (accuracy
    points, mean over seeds), per run with a shots sweep: does an adapter's gain survive a
    stronger backbone?"""
    sweep = table[~table["protocol"].isin(SWEEP_EXCLUDED)]
    out = []
    for run in runs_of(sweep):
        g = _in_run(sweep, *run)
        zs = g[g["method"] == "zero_shot"]["mean"]
        few = g[g["method"].map(few_shot).astype(bool)]
        if zs.empty or few.empty:
            continue
        top = few[few["shots"] == few["shots"].max()]
        out += [{**dict(zip(RUN, run)), "method": r.method, "shots": int(r.shots), "zero_shot": float(zs.iloc[0]), "mean": float(r.mean),
                 "gain": 100 * (float(r.mean) - float(zs.iloc[0]))} for r in top.itertuples(index=False)]
    return pd.DataFrame(out, columns=[*RUN, "method", "shots", "zero_shot", "mean", "gain"])


def plot_backbone_gains(gains: pd.DataFrame, path: Path | None = None):
    """Each method's gain over its own backbone's zero-shot (points) at the largest K, a horizontal
    bar per backbone, a panel per dataset (columns) and protocol with a sweep (rows); the paper's
    methods in bold. With one backbone nothing is compared: the bars are that backbone's gains, in
    one colour and without a legend, and the title says so."""
    plt, sns = _plotting()
    from matplotlib.patches import Patch

    datasets, protocols = list(dict.fromkeys(gains["dataset"])), list(dict.fromkeys(gains["protocol"]))
    if not len(gains):  # only runs without a shots sweep (``paper``): no gain at a largest K to show
        fig, ax = plt.subplots(figsize=(6, 1.2), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, "No run with a shots sweep: no gain over zero-shot to show", ha="center", va="center")
        if path is not None:
            fig.savefig(path, dpi=110, metadata={"Software": None})
        return fig
    methods = _method_order(gains["method"].unique())
    labels = [label(m) for m in methods]
    backbones = list(dict.fromkeys(gains["backbone"]))
    colours = dict(zip(backbones, sns.color_palette("colorblind", len(backbones))))
    height = 0.22 * len(methods) * max(1.5, len(backbones)) + 1.0
    fig, axes = plt.subplots(len(protocols), len(datasets), figsize=(4.6 * len(datasets) + 1.6, height * len(protocols) + 0.8),
                             squeeze=False, sharey=True, layout="constrained")
    for ax_row, proto in zip(axes, protocols):
        for ax, ds in zip(ax_row, datasets):
            d = gains[(gains["dataset"] == ds) & (gains["protocol"] == proto)]
            d = d.assign(label=d["method"].map(label))
            sns.barplot(d, y="label", x="gain", hue="backbone", order=labels, hue_order=backbones, palette=colours, orient="h", ax=ax,
                        legend=False)
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
            ax.axvline(0, color="grey", lw=0.8)
            k = f"K = {int(d['shots'].max())}" if len(d) else "no sweep"
            ax.set(title=f"{ds} ({proto}), {k}", xlabel="gain over zero-shot (points)", ylabel="")
            ax.margins(x=0.15)
            ax.grid(alpha=0.3, axis="x")
            for tick in ax.get_yticklabels():
                if tick.get_text() in {label(m) for m in paper_methods()}:
                    tick.set_fontweight("bold")
    if len(backbones) > 1:
        _legend_below(fig, [Patch(color=colours[b]) for b in backbones], backbones, title="backbone")
        fig.suptitle("Each method's gain over its own backbone's zero-shot at the largest K (bold: the paper's methods)", fontsize=10)
    else:
        fig.suptitle(f"One backbone ({backbones[0]}): each method's gain over zero-shot at the largest K, "
                     "nothing to compare across backbones (bold: the paper's methods)", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


# ---------------------------------------------------------------------------------------------
# The ablation: what each `paper` switch does to each Table I column (rows from ``ablation``)

ABLATION_COLUMNS = {"zero_shot": "Zero-shot", "zero_shot_captions": "Column 2", "trainable": "Column 3"}
DIRECTIONS = {"on": "on alone over corrected", "off": "off alone from paper"}


def read_ablation(results_root: Path, datasets: list[str]) -> pd.DataFrame:
    """The ablation rows (``results/ablation/<dataset>.csv``) of the datasets that have them."""
    paths = [Path(results_root) / "ablation" / f"{ds}.csv" for ds in datasets]
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths if p.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ablation_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy and seed count per dataset, variant and column."""
    rows = rows[rows["method"].isin(ABLATION_COLUMNS)]
    g = rows.groupby(["dataset", "variant", "switch", "direction", "method"], sort=False, dropna=False)["accuracy"]
    return g.agg(mean="mean", n_seeds="count").reset_index()


def ablation_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, switch, direction and column: the mean accuracy with the switch and without it,
    and their difference (``effect``; NaN where a variant has no such column, e.g. column 2 when
    the test images have no captions). ``on``: corrected+X vs corrected; ``off``: paper vs paper-X."""
    means = ablation_means(rows)
    by = {(r.dataset, r.variant, r.method): (r.mean, r.n_seeds) for r in means.itertuples(index=False)}
    out = []
    for r in means[means["direction"].isin(DIRECTIONS)].drop_duplicates(["dataset", "variant"]).itertuples(index=False):
        base = r.variant.split("+")[0] if r.direction == "on" else r.variant.split("-")[0]
        with_, without = (r.variant, base) if r.direction == "on" else (base, r.variant)
        for col in ABLATION_COLUMNS:
            (w, nw), (wo, nwo) = by.get((r.dataset, with_, col), (float("nan"), 0)), by.get((r.dataset, without, col), (float("nan"), 0))
            out.append({"dataset": r.dataset, "switch": r.switch, "direction": r.direction, "column": col, "with": w, "without": wo,
                        "effect": w - wo, "n_seeds_with": int(nw), "n_seeds_without": int(nwo)})
    return pd.DataFrame(out, columns=["dataset", "switch", "direction", "column", "with", "without", "effect", "n_seeds_with",
                                      "n_seeds_without"])


def _ranked_switches(effects: pd.DataFrame) -> list[str]:
    """Switches by the largest |effect| they have on any column in either direction."""
    size = effects.assign(a=effects["effect"].abs()).groupby("switch", sort=False)["a"].max().fillna(0.0)
    return list(size.sort_values(ascending=False, kind="stable").index)


def _points(x: float) -> str:
    """An effect in points, signed; one that rounds to zero is 0.0 (no -0.0)."""
    if pd.isna(x):
        return "n/a"
    v = round(100 * x, 1)
    return "0.0" if v == 0 else f"{v:+.1f}"


def ablation_sentence(dataset: str, effects: pd.DataFrame) -> str:
    """One generated sentence naming the switch that moves the dataset's Table I the most, with the
    biggest mover of each column."""
    e = effects[(effects["dataset"] == dataset) & effects["effect"].notna()]
    if not len(e):
        return f"On {dataset}, no switch changes any column."
    top = e.loc[e["effect"].abs().idxmax()]
    text = (f"On {dataset}, `{top['switch']}` moves Table I the most: turned {DIRECTIONS[top['direction']]} it changes "
            f"{ABLATION_COLUMNS[top['column']]} by {_points(top['effect'])} points (from {100 * top['without']:.1f} without it to "
            f"{100 * top['with']:.1f} with it).")
    per = []
    for col, name in ABLATION_COLUMNS.items():
        c = e[e["column"] == col]
        if len(c):
            r = c.loc[c["effect"].abs().idxmax()]
            per.append(f"{name}: `{r['switch']}` ({_points(r['effect'])}, {r['direction']})")
    text += " Biggest per column: " + "; ".join(per) + "."
    inert = [s for s, g in effects[effects["dataset"] == dataset].groupby("switch", sort=False) if (g["effect"].round(6) == 0).all()]
    if inert:
        text += f" No effect on any column here: {', '.join(f'`{s}`' for s in inert)}."
    return text


def ablation_markdown(effects: pd.DataFrame, rows: pd.DataFrame) -> str:
    """results/ablation.md: per dataset, the generated sentence, the two bases and the gap, and a
    table of every switch's effect (points) on each column in both directions, biggest first."""
    means = ablation_means(rows)
    seeds = sorted({int(n) for n in means.loc[means["method"] == "trainable", "n_seeds"]})
    out = ["# What explains the gap: the paper protocol's switches one at a time", "",
           "Each switch of the `paper` protocol (`params/defaults.yaml`, each with the authors' file it comes from) is turned on "
           "alone over `corrected` and turned off alone from `paper`. A switch's effect on a column is the mean test accuracy "
           "with it minus without it, in points: *on* = (corrected + switch) − corrected, *off* = paper − (paper − switch). "
           "Columns are Table I's, as each variant defines them (Column 2: zero-shot with captions, or the authors' fixed cache; "
           "Column 3: the trainable adapter at the variant's smallest shots); *n/a*: the variant has no such column (Column 2 mixes "
           "in each test image's caption, and `captions_for_shots_only` leaves the test images without one). Effects do not add "
           "up to the gap: switches interact.",
           "", f"Seeds per variant for Columns 2 and 3: {', '.join(map(str, seeds))} (at most `ablation.n_seeds`; "
           "a variant with `one_seed_42` has its one seed). Per-seed rows: `results/ablation/<dataset>.csv`.", ""]
    for ds in dict.fromkeys(effects["dataset"]):
        e = effects[effects["dataset"] == ds]
        m = means[means["dataset"] == ds].set_index(["variant", "method"])
        out += [f"## {ds}", "", ablation_sentence(ds, effects), ""]
        base = []
        for proto in ("corrected", "paper"):
            cells = [f"{name} {100 * m.loc[(proto, col), 'mean']:.1f}" if (proto, col) in m.index else f"{name} –"
                     for col, name in ABLATION_COLUMNS.items()]
            n = int(m.loc[(proto, "trainable"), "n_seeds"]) if (proto, "trainable") in m.index else 0
            base.append(f"*{proto}*: " + ", ".join(cells) + f" ({n} seed{'s' if n != 1 else ''})")
        out += ["; ".join(base) + ".", ""]
        head = [f"{d}: {name}" for d in DIRECTIONS for name in ABLATION_COLUMNS.values()]
        out += ["| switch | " + " | ".join(head) + " |", "|" + "---|" * (1 + len(head))]
        for s in _ranked_switches(e):
            by = e[e["switch"] == s].set_index(["direction", "column"])["effect"]
            out.append(f"| `{s}` | " + " | ".join(_points(by.get((d, c), float("nan"))) for d in DIRECTIONS for c in ABLATION_COLUMNS) + " |")
        out.append("")
    return "\n".join(out)


def plot_ablation(effects: pd.DataFrame, path: Path | None = None):
    """Each switch's effect (points) on each column: one row of panels per dataset, on alone over
    corrected (left) and off alone from paper (right), switches biggest first."""
    plt, sns = _plotting()
    datasets = list(dict.fromkeys(effects["dataset"]))
    n_sw = max(effects.groupby("dataset")["switch"].nunique()) if len(effects) else 1
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 0.35 * n_sw * len(datasets) + 1.2 * len(datasets) + 0.6), squeeze=False,
                             sharex=True, layout="constrained")
    palette = dict(zip(ABLATION_COLUMNS, sns.color_palette("colorblind", len(ABLATION_COLUMNS))))
    for row, ds in zip(axes, datasets):
        e = effects[effects["dataset"] == ds]
        order = _ranked_switches(e)
        for ax, d in zip(row, DIRECTIONS):
            sub = e[e["direction"] == d].assign(points=lambda x: 100 * x["effect"].fillna(0.0))
            sns.barplot(sub, y="switch", x="points", hue="column", order=order, hue_order=list(ABLATION_COLUMNS), palette=palette,
                        ax=ax, orient="h", legend=False)
            ax.axvline(0, color="black", lw=0.8)
            ax.set(title=f"{ds}: {DIRECTIONS[d]}", xlabel="effect on test accuracy (points)", ylabel="")
            ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    _legend_below(fig, [Patch(color=palette[c]) for c in ABLATION_COLUMNS], list(ABLATION_COLUMNS.values()), title="Table I column",
                  width_per_column=1.5)
    if path is not None:
        fig.savefig(path, dpi=120, metadata={"Software": None})
    return fig


# ---------------------------------------------------------------------------------------------
# Caption quality (results/captions/): the rates each run's 01_captions wrote, and examples

QUALITY_COLUMNS = ["leakage", "prompt_leak", "class_leak", "names_class", "repetition", "empty", "summarised", "truncated"]


def caption_quality_table(results_root: Path, datasets: list[str], protocols: list[str],
                          backbones: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run with the rates and the median length, the length histograms long: run,
    tokens, captions) from each run's ``captions_quality.json`` (lengths in the backbone's tokens)."""
    rows, hist = [], []
    for ds in datasets:
        for bb in backbones:
            for proto in protocols:
                path = run_dir(results_root, ds, bb, proto) / "captions_quality.json"
                if not path.is_file():
                    continue
                q = json.loads(path.read_text())
                run = {"dataset": ds, "backbone": bb, "protocol": proto}
                rows.append({**run, "captions": q["captions"], **{k: q[k] for k in QUALITY_COLUMNS},
                             "median_tokens": q["median_tokens"], "token_limit": q["token_limit"],
                             "fp32_redone": q["fp32_captions"] + q["fp32_summaries"]})
                hist += [{**run, "tokens": b, "captions": n} for b, n in q["length_histogram"].items()]
    return pd.DataFrame(rows), pd.DataFrame(hist)


def caption_quality_markdown(table: pd.DataFrame) -> str:
    """results/captions/quality.md: the rates (%) per run, and what each means."""
    head = ["dataset", "backbone", "protocol", "captions"] + QUALITY_COLUMNS + ["median tokens", "fp32 redone"]
    out = ["# Caption quality", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        out.append(f"| {r.dataset} | {r.backbone} | {r.protocol} | {r.captions} | " + " | ".join(f"{100 * getattr(r, c):.1f}" for c in QUALITY_COLUMNS)
                   + f" | {r.median_tokens:.0f} | {r.fp32_redone} |")
    out += ["", "Rates in % of the run's captions. *leakage*: the caption carries a 4-word fragment of its prompt "
            "(*prompt_leak*) or the class name its prompt gave it (*class_leak*); *names_class*: it names its class at all "
            "(given or recognised); *repetition*: a repeated sentence or word run in the raw or the final text; *empty*: nothing "
            "left after cleaning (a placeholder was stored); *summarised*: shortened by the summariser (offline: lengthened to "
            "a minimum, the authors' setting); *truncated*: cut to the encoder's text limit by its own tokenizer. *fp32 redone* "
            "(a count, not a rate): captions and summaries generated again in fp32 because their half-precision batch produced "
            "non-finite scores or an empty text.", ""]
    return "\n".join(out)


def length_bins(labels) -> list[str]:
    """Caption length bins (``captions_quality.json``: "<= 8", ..., "<= 128", "> 128") in numeric
    order, each "<= n" before "> n"; a label without a number last."""
    def key(label: str):
        m = re.search(r"\d+(\.\d+)?", label)
        return (float(m.group()) if m else float("inf"), label.lstrip().startswith(">"), label)

    return sorted(dict.fromkeys(labels), key=key)


def plot_caption_lengths(hist: pd.DataFrame, path: Path | None = None):
    """Caption length in encoder tokens per dataset (one panel each), bins in numeric order, a bar
    group per protocol (per backbone and protocol where more than one backbone ran)."""
    plt, sns = _plotting()
    from matplotlib.patches import Patch

    datasets = list(dict.fromkeys(hist["dataset"]))
    hist = hist.assign(protocol=hist["backbone"] + " " + hist["protocol"]) if hist["backbone"].nunique() > 1 else hist
    groups = list(dict.fromkeys(hist["protocol"]))
    colours = dict(zip(groups, sns.color_palette("colorblind", len(groups))))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False, layout="constrained")
    for ax, ds in zip(axes[0], datasets):
        d = hist[hist["dataset"] == ds]
        share = d.assign(share=100 * d["captions"] / d.groupby("protocol")["captions"].transform("sum").clip(lower=1))
        sns.barplot(share, x="tokens", y="share", hue="protocol", order=length_bins(hist["tokens"]), hue_order=groups, palette=colours,
                    ax=ax, legend=False)
        ax.set(title=ds, xlabel="caption length (encoder tokens)", ylabel="share of the run's captions (%)")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    _legend_below(fig, [Patch(color=colours[g]) for g in groups], groups, title="protocol", width_per_column=1.6)
    if path is not None:
        fig.savefig(path, dpi=120, metadata={"Software": None})
    return fig


def plot_caption_examples(examples: pd.DataFrame, images: dict, path: Path | None = None, width: int = 48):
    """Examples next to their images (``images``: {(dataset, image_id): PIL image}): a row per
    example, flagged ones first, with dataset, protocol, class and what was flagged."""
    plt, sns = _plotting()
    import textwrap

    n = len(examples)
    fig, axes = plt.subplots(max(n, 1), 2, figsize=(8, 1.5 * max(n, 1)), gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    flags = ["prompt_leak", "class_leak", "repetition", "empty", "truncated"]
    for (ax_im, ax_txt), r in zip(axes, examples.itertuples(index=False)):
        im = images.get((r.dataset, r.image_id))
        if im is not None:
            ax_im.imshow(im)
        ax_im.axis("off")
        which = [f for f in flags if bool(getattr(r, f))] or ["clean"]
        head = f"{r.dataset} / {r.protocol} / {r.classname}: {', '.join(which)}"
        ax_txt.text(0, 0.5, head + "\n" + "\n".join(textwrap.wrap(str(r.caption), width)[:4]), va="center", fontsize=7,
                    color="firebrick" if which != ["clean"] else "black")
        ax_txt.axis("off")
    fig.suptitle("Captions next to their images: flagged ones first (red: what was flagged), then clean ones", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


# ---------------------------------------------------------------------------------------------
# The stage notebooks' own figures (01-05), shown inline and not written anywhere


def show(fig, dpi: int = 80):
    """A figure as an inline PNG (``IPython.display.Image``), then closed: what a stage notebook
    displays without writing a file that no stage declares. Deterministic bytes (no software tag)."""
    import io

    from IPython.display import Image

    plt, _ = _plotting()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return Image(data=buf.getvalue(), format="png")


def has_sweep(rows: pd.DataFrame) -> bool:
    """Whether a run's rows sweep shots (its protocol is not one of SWEEP_EXCLUDED's single-K ones)."""
    return bool(len(rows)) and not rows["protocol"].isin(SWEEP_EXCLUDED).all()


def plot_cosines(images, caps, labels, class_text, where: str = "validation"):
    """02_embed's sanity check as two histograms: an image's cosine to its own caption against
    other images' captions, and to its own class prompt against the other classes'."""
    import torch

    plt, _ = _plotting()
    pairs = [("caption", images @ caps.T, torch.eye(len(images), dtype=torch.bool)),
             ("class prompt", images @ class_text.T, torch.nn.functional.one_hot(labels, class_text.shape[0]).bool())]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    for ax, (what, sims, own) in zip(axes, pairs):
        ax.hist(sims[~own].numpy(), bins=40, density=True, alpha=0.6, color="tab:grey", label=f"other {what}s")
        ax.hist(sims[own].numpy(), bins=40, density=True, alpha=0.6, color="tab:blue", label=f"its own {what}")
        ax.set(title=f"{where} images: cosine to {what}s", xlabel="cosine similarity", ylabel="density")
        ax.legend(fontsize=8)
    return fig


def plot_confusion(labels, predicted, classnames: list[str], title: str):
    """Test images per true class (rows) and predicted class (columns), with the accuracy in the
    title: where a zero-shot classifier's answers go."""
    plt, sns = _plotting()
    n = len(classnames)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    size = min(1.2 + 0.45 * n, 11)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    sns.heatmap(counts, annot=n <= 20, fmt="d", cmap="Blues", cbar_kws={"label": "test images"}, ax=ax,
                xticklabels=classnames, yticklabels=classnames, annot_kws={"fontsize": 7})
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set(title=f"{title}: {100 * accuracy:.1f}% of {counts.sum()} test images", xlabel="predicted class", ylabel="true class")
    ax.tick_params(labelsize=7)
    return fig
