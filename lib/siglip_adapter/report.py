"""Per-stage result files, Table I and the accuracy-vs-shots plot.

Stage files: ``results/runs/<dataset>/<stage>.csv`` (one row per method, shots and seed) and
``<stage>.json`` (DVC metrics: mean, std and seed count per method and shots). Table I:
``results/table1.csv`` (dataset, backbone, protocol, method, shots, mean, std, n_seeds; accuracy as
a fraction) and ``results/table1.md`` for people. A run is a dataset on a backbone under a
protocol (``RUN``); the figures and tables name the backbone where more than one ran.
"""

from __future__ import annotations

import json
from pathlib import Path

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
METHOD_ORDER = ["zero_shot", "zero_shot_captions", "linear_probe", "tip_adapter", "tip_adapter_f", "clip_adapter", "gda", "idea", "coop",
                "adapter", "trainable"]
METHOD_LABELS = {"zero_shot": "Zero-shot", "zero_shot_captions": "Zero-shot + captions", "linear_probe": "Linear probe",
                 "tip_adapter": "Tip-Adapter", "tip_adapter_f": "Tip-Adapter-F", "clip_adapter": "CLIP-Adapter", "gda": "GDA",
                 "idea": "IDEA (training-free)", "coop": "CoOp", "adapter": "SigLIP-Adapter (training-free)",
                 "trainable": "SigLIP-Adapter (trainable)"}
FEW_SHOT = [m for m in METHOD_ORDER if not m.startswith("zero_shot")]  # the methods of the shots sweep
SWEEP_EXCLUDED = ("published", "paper")  # protocols without a shots sweep (one K, one seed)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and seed count per run, method and shots."""
    g = rows.groupby([*RUN, "method", "shots"], sort=False)["accuracy"]
    out = g.agg(mean="mean", std=lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0, n_seeds="count").reset_index()
    out["order"] = out["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return out.sort_values([*RUN, "order", "shots"]).drop(columns="order").reset_index(drop=True)[TABLE_COLUMNS]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A result table as CSV (6 significant digits), written atomically."""
    return write_atomic(Path(path), lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def write_stage(rows: pd.DataFrame, csv_path: Path, json_path: Path) -> pd.DataFrame:
    """Write a stage's per-seed rows and its metrics summary; returns the summary."""
    write_csv(rows, csv_path)
    summary = summarise(rows)
    metrics: dict = {}
    for r in summary.itertuples(index=False):
        metrics.setdefault(r.method, {})[f"shots_{r.shots}"] = {"mean": round(r.mean, 6), "std": round(r.std, 6), "n_seeds": int(r.n_seeds)}
    write_atomic(Path(json_path), lambda tmp: tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n"))
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


def table1_markdown(table: pd.DataFrame, shots: int = 1, text_keys: pd.DataFrame | None = None) -> str:
    """Table I as markdown: per dataset, a line per protocol (published first) with the paper's
    three columns and the training-free adapter at ``shots``, then what each column measures
    under each protocol, then the shots sweep of the adapters (accuracy in %, mean ± std over
    seeds), then (``text_keys``: ``text_key_summary``) what the captions add to the adapter."""
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
    out = "\n".join(lines) + "\n\nWhat each column measures:\n\n"
    for col, by in COLUMN_MEANINGS.items():
        out += f"- **{col}**: " + "; ".join(f"*{p}*: {text}" for p, text in by.items()) + ".\n"
    sweep = table[table["method"].isin(FEW_SHOT) & ~table["protocol"].isin(SWEEP_EXCLUDED)]
    if len(sweep):
        ks = sorted(sweep["shots"].unique())
        out += "\n## Every method against shots\n\nAccuracy (%), mean ± std over seeds, every hyper-parameter chosen on validation:\n\n"
        out += "| dataset | backbone | protocol | method | " + " | ".join(f"{k}-shot" for k in ks) + " | seeds |\n"
        out += "|" + "---|" * (5 + len(ks)) + "\n"
        for (ds, bb, proto, m), g in sweep.groupby([*RUN, "method"], sort=False):
            by = g.set_index("shots")
            cells = [_cell(*by.loc[k, ["mean", "std", "n_seeds"]]) if k in by.index else "–" for k in ks]
            out += f"| {ds} | {bb} | {proto} | {METHOD_LABELS[m]} | " + " | ".join(cells) + f" | {int(g['n_seeds'].max())} |\n"
    if len(sweep):
        out += ranking_markdown(ranking(table))
    if text_keys is not None and len(text_keys):
        out += text_key_markdown(text_keys)
    return out


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, backbone, protocol) with a shots sweep: each few-shot method's rank among the methods
    at every K (1 = best mean accuracy; ties share the mean rank), averaged over K, with its mean
    accuracy over K and at the largest K; best mean rank first."""
    sweep = table[table["method"].isin(FEW_SHOT) & ~table["protocol"].isin(SWEEP_EXCLUDED)].copy()
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
            out += f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |\n"
    return out


TEXT_KEY_FILE = "04_text_keys"  # 04_adapter's caption ablation rows, per run


def read_text_keys(results_root: Path, datasets: list[str], protocols: list[str], backbones: list[str]) -> pd.DataFrame:
    """The caption ablation rows (``experiment.text_key_rows``) of every run."""
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


def _palette() -> dict:
    plt, sns = _plotting()
    return dict(zip(FEW_SHOT, sns.color_palette("tab10", len(FEW_SHOT))))


def plot_shots(rows: pd.DataFrame, path: Path | None = None):
    """Accuracy against shots for every few-shot method (mean over seeds, band: ±1 std), a panel
    per dataset (columns) and backbone x protocol with a sweep (rows); zero-shot as a dashed line."""
    plt, sns = _plotting()
    ours = rows[~rows["protocol"].isin(SWEEP_EXCLUDED)].assign(accuracy=lambda r: 100 * r["accuracy"])
    datasets, settings = list(dict.fromkeys(ours["dataset"])), list(dict.fromkeys(zip(ours["backbone"], ours["protocol"])))
    fig, axes = plt.subplots(len(settings), len(datasets), figsize=(5.5 * len(datasets), 4 * len(settings)), squeeze=False)
    palette = _palette()
    for ax_row, (bb, proto) in zip(axes, settings):
        for ax, ds in zip(ax_row, datasets):
            d = _in_run(ours, ds, bb, proto)
            few = d[d["method"].isin(FEW_SHOT)]
            sns.lineplot(few, x="shots", y="accuracy", hue="method", hue_order=[m for m in FEW_SHOT if m in set(few["method"])],
                         palette=palette, errorbar="sd", marker="o", ax=ax, legend=ax is axes[0][-1])
            zs = d[d["method"] == "zero_shot"]
            if len(zs):
                ax.axhline(zs["accuracy"].mean(), ls="--", color="grey", label="zero-shot")
            ax.set_xscale("log", base=2)
            ks = sorted(few["shots"].unique())
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.set(title=run_label(ours, ds, bb, proto), xlabel="shots per class (K)", ylabel="test accuracy (%)")
            ax.grid(alpha=0.3)
    leg = axes[0][-1].get_legend()
    if leg is not None:
        handles, labels = axes[0][-1].get_legend_handles_labels()
        axes[0][-1].legend(handles, [METHOD_LABELS.get(lab, lab) for lab in labels], fontsize=7, loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def plot_sensitivity(sens: pd.DataFrame, path: Path | None = None):
    """The training-free adapter's test accuracy (%) over alpha x theta at the beta validation chose
    (mean over seeds at the largest K), a heat map per run with a sweep; the
    number in a cell is how often validation chose it."""
    plt, sns = _plotting()
    sens = sens[~sens["protocol"].isin(SWEEP_EXCLUDED)]
    runs = runs_of(sens)
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.2), squeeze=False)
    for ax, run in zip(axes[0], runs):
        d = _in_run(sens, *run)
        acc = d.pivot_table(index="alpha", columns="theta", values="accuracy", aggfunc="mean").mul(100)
        picked = d.pivot_table(index="alpha", columns="theta", values="chosen", aggfunc="sum").astype(int)
        sns.heatmap(acc, annot=picked.where(picked > 0, 0).astype(str).where(picked > 0, ""), fmt="", cmap="viridis", ax=ax,
                    cbar_kws={"label": "test accuracy (%)"})
        ax.set(title=f"{run_label(sens, *run)}, K = {int(d['shots'].max())}", xlabel="theta (sharpness)", ylabel="alpha (caption weight)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig


def plot_curves(curves: pd.DataFrame, path: Path | None = None):
    """Validation accuracy against epoch for each trained method (a line per learning rate), a row
    per run with a sweep: the learning curves behind each chosen epoch."""
    plt, sns = _plotting()
    curves = curves[~curves["protocol"].isin(SWEEP_EXCLUDED)]
    runs = runs_of(curves)
    trained = [m for m in FEW_SHOT if m in set(curves["method"])]
    fig, axes = plt.subplots(len(runs), len(trained), figsize=(3.4 * len(trained), 2.8 * len(runs)), squeeze=False, sharey="row")
    for ax_row, run in zip(axes, runs):
        for ax, m in zip(ax_row, trained):
            d = _in_run(curves, *run)
            d = d[d["method"] == m]
            d = d.assign(val=100 * d["val_accuracy"], lr=d["lr"].map(lambda v: f"{v:g}"))
            sns.lineplot(d, x="epoch", y="val", hue="lr", marker=".", ax=ax, palette="colorblind")
            ax.set(title=f"{METHOD_LABELS[m]}\n{run_label(curves, *run)}, K = {int(d['shots'].max()) if len(d) else '?'}", xlabel="epoch",
                   ylabel="validation accuracy (%)")
            ax.title.set_fontsize(8)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    fig.tight_layout()
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
        few = g[g["method"].isin(FEW_SHOT)]
        if zs.empty or few.empty:
            continue
        top = few[few["shots"] == few["shots"].max()]
        out += [{**dict(zip(RUN, run)), "method": r.method, "shots": int(r.shots), "zero_shot": float(zs.iloc[0]), "mean": float(r.mean),
                 "gain": 100 * (float(r.mean) - float(zs.iloc[0]))} for r in top.itertuples(index=False)]
    return pd.DataFrame(out, columns=[*RUN, "method", "shots", "zero_shot", "mean", "gain"])


def plot_backbone_gains(gains: pd.DataFrame, path: Path | None = None):
    """Each method's gain over zero-shot (points) at the largest K, a bar per backbone, a panel per
    dataset x protocol with a sweep."""
    plt, sns = _plotting()
    panels = list(dict.fromkeys(zip(gains["dataset"], gains["protocol"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (ds, proto) in zip(axes[0], panels):
        d = gains[(gains["dataset"] == ds) & (gains["protocol"] == proto)]
        d = d.assign(label=d["method"].map(METHOD_LABELS))
        sns.barplot(d, x="label", y="gain", hue="backbone", order=[METHOD_LABELS[m] for m in FEW_SHOT if m in set(d["method"])], ax=ax,
                    palette="colorblind")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{ds} ({proto}), K = {int(d['shots'].max())}", xlabel="", ylabel="gain over zero-shot (points)")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
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
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 0.35 * n_sw * len(datasets) + 1.2 * len(datasets)), squeeze=False, sharex=True)
    palette = dict(zip(ABLATION_COLUMNS, sns.color_palette("colorblind", len(ABLATION_COLUMNS))))
    for row, ds in zip(axes, datasets):
        e = effects[effects["dataset"] == ds]
        order = _ranked_switches(e)
        for ax, d in zip(row, DIRECTIONS):
            sub = e[e["direction"] == d].assign(points=lambda x: 100 * x["effect"].fillna(0.0))
            sns.barplot(sub, y="switch", x="points", hue="column", order=order, hue_order=list(ABLATION_COLUMNS), palette=palette,
                        ax=ax, orient="h", legend=ax is axes[0][0])
            ax.axvline(0, color="black", lw=0.8)
            ax.set(title=f"{ds}: {DIRECTIONS[d]}", xlabel="effect on test accuracy (points)", ylabel="")
            ax.grid(axis="x", alpha=0.3)
    if axes[0][0].get_legend() is not None:
        handles, _ = axes[0][0].get_legend_handles_labels()
        axes[0][0].legend(handles, list(ABLATION_COLUMNS.values()), fontsize=7, loc="lower right")
    fig.tight_layout()
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


def plot_caption_lengths(hist: pd.DataFrame, path: Path | None = None):
    """Caption length in encoder tokens per dataset (one panel each), a bar group per protocol (per
    backbone and protocol where more than one backbone ran)."""
    plt, sns = _plotting()
    datasets = list(dict.fromkeys(hist["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = hist[hist["dataset"] == ds]
        d = d.assign(protocol=d["backbone"] + " " + d["protocol"]) if hist["backbone"].nunique() > 1 else d
        share = d.assign(share=d["captions"] / d.groupby("protocol")["captions"].transform("sum").clip(lower=1))
        sns.barplot(share, x="tokens", y="share", hue="protocol", ax=ax, palette="colorblind")
        ax.set(title=ds, xlabel="caption length (encoder tokens)", ylabel="share of captions")
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
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
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    return fig
