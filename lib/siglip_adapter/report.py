"""Per-stage result files, Table I and the accuracy-vs-shots plot.

Stage files: ``results/runs/<dataset>/<stage>.csv`` (one row per method, shots and seed) and
``<stage>.json`` (DVC metrics: mean, std and seed count per method and shots). Table I:
``results/table1.csv`` (dataset, protocol, method, shots, mean, std, n_seeds; accuracy as a
fraction) and ``results/table1.md`` for people.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402

TABLE_COLUMNS = ["dataset", "protocol", "method", "shots", "mean", "std", "n_seeds"]
METHOD_ORDER = ["zero_shot", "zero_shot_captions", "adapter", "trainable"]
METHOD_LABELS = {"zero_shot": "Zero-shot", "zero_shot_captions": "Zero-shot + captions", "adapter": "SigLIP-Adapter (training-free)",
                 "trainable": "SigLIP-Adapter (trainable)"}


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and seed count per dataset, protocol, method and shots."""
    g = rows.groupby(["dataset", "protocol", "method", "shots"], sort=False)["accuracy"]
    out = g.agg(mean="mean", std=lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0, n_seeds="count").reset_index()
    out["order"] = out["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return out.sort_values(["dataset", "protocol", "order", "shots"]).drop(columns="order").reset_index(drop=True)[TABLE_COLUMNS]


def write_stage(rows: pd.DataFrame, csv_path: Path, json_path: Path) -> pd.DataFrame:
    """Write a stage's per-seed rows and its metrics summary; returns the summary."""
    rows.to_csv(csv_path, index=False, float_format="%.6g")
    summary = summarise(rows)
    metrics: dict = {}
    for r in summary.itertuples(index=False):
        metrics.setdefault(r.method, {})[f"shots_{r.shots}"] = {"mean": round(r.mean, 6), "std": round(r.std, 6), "n_seeds": int(r.n_seeds)}
    json_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return summary


STAGE_FILES = ("03_zero_shot", "04_adapter", "05_trainable")


def collect_rows(results_root: Path, datasets: list[str]) -> pd.DataFrame:
    frames = []
    for ds in datasets:
        for stage in STAGE_FILES:
            path = Path(results_root) / "runs" / ds / f"{stage}.csv"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; run the {stage} notebook for {ds}")
            frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def published_rows(path: Path, datasets: list[str]) -> pd.DataFrame:
    """The paper's own Table I numbers (protocol ``published``) for the datasets run, where known."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    rows = []
    for ds in datasets:
        for method, by_shots in (data.get(ds) or {}).items():
            for shots, value in (by_shots or {}).items():
                if value is not None:
                    rows.append({"dataset": ds, "protocol": "published", "method": method, "shots": int(shots),
                                 "mean": float(value), "std": float("nan"), "n_seeds": float("nan")})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table1(rows: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    ours = summarise(rows)
    return pd.concat([ours, published], ignore_index=True) if len(published) else ours


def _cell(mean: float, std: float, n) -> str:
    if pd.isna(std) or pd.isna(n):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def table1_markdown(table: pd.DataFrame, shots: int = 1) -> str:
    """Table I as markdown: one line per dataset and protocol, zero-shot and the ``shots``-shot
    adapters side by side (accuracy in %, mean ± std over seeds), then the full shots sweep."""
    cols = [("zero_shot", 0), ("zero_shot_captions", 0), ("adapter", shots), ("trainable", shots)]
    head = ["dataset", "protocol"] + [METHOD_LABELS[m] + (f", {k}-shot" if k else "") for m, k in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (ds, proto), g in table.groupby(["dataset", "protocol"], sort=False):
        cells = []
        for m, k in cols:
            hit = g[(g["method"] == m) & (g["shots"] == k)]
            cells.append(_cell(*hit.iloc[0][["mean", "std", "n_seeds"]]) if len(hit) else "–")
        lines.append("| " + " | ".join([ds, proto] + cells) + " |")
    sweep = table[table["method"].isin(["adapter", "trainable"]) & (table["protocol"] != "published")]
    out = "\n".join(lines) + "\n"
    if len(sweep):
        ks = sorted(sweep["shots"].unique())
        out += "\nAccuracy (%) against shots, mean ± std over seeds:\n\n"
        out += "| dataset | protocol | method | " + " | ".join(f"{k}-shot" for k in ks) + " | seeds |\n"
        out += "|" + "---|" * (4 + len(ks)) + "\n"
        for (ds, proto, m), g in sweep.groupby(["dataset", "protocol", "method"], sort=False):
            by = g.set_index("shots")
            cells = [_cell(*by.loc[k, ["mean", "std", "n_seeds"]]) if k in by.index else "–" for k in ks]
            out += f"| {ds} | {proto} | {METHOD_LABELS[m]} | " + " | ".join(cells) + f" | {int(g['n_seeds'].max())} |\n"
    return out


def plot_shots(table: pd.DataFrame, path: Path | None = None):
    """Accuracy against shots per dataset: adapters as lines with ±1 std, zero-shot as dashes."""
    ours = table[table["protocol"] != "published"]
    datasets = list(dict.fromkeys(ours["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    palette = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))
    for ax, ds in zip(axes[0], datasets):
        d = ours[ours["dataset"] == ds]
        for m in ("adapter", "trainable"):
            g = d[d["method"] == m].sort_values("shots")
            ax.errorbar(g["shots"], 100 * g["mean"], yerr=100 * g["std"], marker="o", capsize=3, label=METHOD_LABELS[m], color=palette[m])
        for m in ("zero_shot", "zero_shot_captions"):
            g = d[d["method"] == m]
            if len(g):
                ax.axhline(100 * g["mean"].iloc[0], ls="--", color=palette[m], label=METHOD_LABELS[m])
        ax.set_xscale("log", base=2)
        ks = sorted(d[d["shots"] > 0]["shots"].unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set(title=ds, xlabel="shots per class (K)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, metadata={"Software": None})
    return fig
