"""The ablation (``results/ablation.md``): what each switch of the ``paper`` protocol does to each
of Table I's columns, from the rows ``siglip_adapter.ablation`` writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import _legend_below, _plotting


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
