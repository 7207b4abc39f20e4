"""Caption quality (``results/captions/``): the rates each run's 01_captions wrote, their lengths
and examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .figures import _legend_below, _plotting
from .stage import label, run_dir


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
