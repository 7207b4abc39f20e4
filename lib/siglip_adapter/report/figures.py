"""The figures: accuracy against shots, the adapter's sensitivity, the learning curves, the backbone
gains, and the stage notebooks' sanity checks; the paper's methods thick in colours of their own,
legends below the panels, deterministic PNG bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .stage import RUN, SWEEP_EXCLUDED, _in_run, _method_order, few_shot, label, paper_methods, run_label, runs_of


def _plotting():
    """(pyplot, seaborn) on the Agg backend, imported on first use: the stages that only write
    tables do not pay for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


# Figures: the paper's methods in colours of their own, drawn thick; every other method thin, from a palette
# without those colours (then with line styles, so 16+ methods stay apart); legends below the panels.
PAPER_COLOURS = ("#9467bd", "#000000", "#d62728", "#e07b00", "#006d5b")  # the paper's methods in table order: purple, black, red, ...

OTHER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]  # tab10 less red, purple, grey

OTHER_DASHES = ["-", "--", ":", "-."]


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
    cell is how many seeds' validation search chose it, which the figure's title says. A run whose
    grid is one point (support_only's fixed values) has nothing to show and no panel."""
    plt, sns = _plotting()
    sens = sens[~sens["protocol"].isin(SWEEP_EXCLUDED)]
    points = sens.groupby(list(RUN))[["alpha", "theta"]].transform(lambda v: v.nunique())
    sens = sens[(points["alpha"] * points["theta"]) > 1]
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


OWN_STEPS = -1.0  # the learning-rate key of a curve whose steps the method derives from the data (no learning rate given)


def plot_curves(curves: pd.DataFrame, path: Path | None = None):
    """Validation accuracy against epoch for each trained method (a line per learning rate, one
    colour per rate in every panel), a row per run with a sweep: the learning curves behind each
    chosen epoch. A method that checks nothing on validation in a run (CLAP, ZS-LP, TaskRes; every
    method under support_only) has no panel there, nor a run with nothing checked; one whose step sizes come from the data (LP++: learning rate empty) has one line,
    "its own"."""
    plt, sns = _plotting()
    from matplotlib.lines import Line2D

    curves = curves[~curves["protocol"].isin(SWEEP_EXCLUDED)]
    curves = curves[curves.groupby([*RUN, "method"])["val_accuracy"].transform(lambda v: v.notna().any())]
    curves = curves.assign(lr=curves["lr"].fillna(OWN_STEPS))
    if curves.empty:  # support_only: no method checked anything on validation
        fig, ax = plt.subplots(figsize=(6.4, 1.2), layout="constrained")
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No learning curve: no validation image, so no method checked an epoch (the last one is kept).",
                ha="center", va="center", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=110, metadata={"Software": None})
        return fig
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
    _legend_below(fig, [Line2D([], [], marker=".", color=colours[lr]) for lr in rates], ["its own" if lr == OWN_STEPS else f"{lr:g}" for lr in rates],
                  title="learning rate", width_per_column=1.2)
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


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
