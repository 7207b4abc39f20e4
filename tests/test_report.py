"""Table I from per-seed rows: the numbers are plain means and sample stds of the CSV rows."""

import json

import numpy as np
import pandas as pd
import pytest

from siglip_adapter import report
from siglip_adapter.methods import registry


def rows():
    accs = {1: [0.40, 0.44, 0.42], 16: [0.55, 0.57, 0.59]}
    out = [{"dataset": "d", "backbone": "b", "protocol": "corrected", "method": "adapter", "shots": k, "seed": s, "accuracy": a}
           for k, v in accs.items() for s, a in enumerate(v)]
    out.append({"dataset": "d", "backbone": "b", "protocol": "corrected", "method": "zero_shot", "shots": 0, "seed": None, "accuracy": 0.3})
    return pd.DataFrame(out)


def test_summary_is_mean_and_sample_std(tmp_path):
    s = report.stage.write_stage(rows(), tmp_path / "x.csv", tmp_path / "x.json")
    assert list(s.columns) == report.stage.TABLE_COLUMNS
    s = s.set_index(["method", "shots"])
    assert s.loc[("adapter", 1), "mean"] == np.mean([0.40, 0.44, 0.42])
    assert np.isclose(s.loc[("adapter", 16), "std"], np.std([0.55, 0.57, 0.59], ddof=1))
    assert s.loc[("adapter", 1), "n_seeds"] == 3 and s.loc[("zero_shot", 0), "std"] == 0.0
    metrics = json.loads((tmp_path / "x.json").read_text())
    assert metrics["adapter"] == round(np.mean([0.55, 0.57, 0.59]), 6) and metrics["adapter_1_shot"] == round(np.mean([0.40, 0.44, 0.42]), 6)
    assert metrics["shots"] == 16 and metrics["zero_shot"] == 0.3


def _leaves(tree: dict, prefix: str = "") -> dict:
    """A metrics JSON flattened as ``dvc metrics show`` does: one column per leaf."""
    out = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_stage_metrics_stay_a_few_columns_however_many_methods_run(tmp_path):
    """`dvc metrics show` makes a column of every leaf key of every metrics file: a stage file keeps
    a few flat keys (the paper's methods, the best method), not one per method x shots x
    statistic, so twenty methods read like nine; the CSV keeps every number."""
    rng = np.random.default_rng(0)
    methods = [*registry.ordered(), *(f"baseline_{i}" for i in range(9))]  # twenty methods
    out = [{"dataset": "d", "backbone": "b", "protocol": "corrected", "method": m, "shots": k, "seed": s,
            "accuracy": 0.9 if (m, k) == ("baseline_3", 16) else float(rng.uniform(0.2, 0.8))}
           for m in methods if not m.startswith("zero_shot") for k in (1, 2, 4, 8, 16) for s in range(3)]
    out += [{"dataset": "d", "backbone": "b", "protocol": "corrected", "method": m, "shots": 0, "seed": None, "accuracy": 0.1}
            for m in ("zero_shot", "zero_shot_captions")]
    summary = report.stage.write_stage(pd.DataFrame(out), tmp_path / "x.csv", tmp_path / "x.json")
    leaves = _leaves(json.loads((tmp_path / "x.json").read_text()))
    assert len(leaves) <= 10, sorted(leaves)
    assert {"adapter", "adapter_1_shot", "trainable", "trainable_1_shot", "best", "best_method"} <= set(leaves)
    assert leaves["best_method"] == "baseline_3" and leaves["best"] == 0.9  # a baseline that beats the paper's methods shows
    at = summary.set_index(["method", "shots"])["mean"]
    assert leaves["trainable"] == round(at[("trainable", 16)], 6) and leaves["trainable_1_shot"] == round(at[("trainable", 1)], 6)
    assert len(pd.read_csv(tmp_path / "x.csv")) == len(out)  # every per-seed row stays in the CSV


def test_table_includes_published_numbers_when_recorded(tmp_path):
    pub = tmp_path / "paper.yaml"
    pub.write_text("d: {adapter: {1: 0.5}, zero_shot: {0: null}}\nother: {adapter: {1: 0.9}}\n")
    table = report.tables.table1(rows(), report.tables.published_rows(pub, ["d"]))
    published = table[table["protocol"] == "published"]
    assert len(published) == 1 and published.iloc[0]["mean"] == 0.5
    md = report.tables.table1_markdown(table)
    assert "| d | siglip-b16 | published | – | – | – | 50.0 |" in md and "| d | b | corrected | 30.0 | – | – | 42.0 ± 2.0 |" in md
    assert all(f"**{col}**" in md for col in report.tables.COLUMN_MEANINGS)  # what each column measures


def _section(md: str, heading: str) -> str:
    """The text of a markdown section, from its heading to the next heading of any level."""
    start = md.index(heading + "\n") + len(heading)
    end = md.find("\n#", start)
    return md[start:] if end < 0 else md[start:end]


def test_table1_has_a_title_and_keeps_the_published_rows_apart_from_this_run(tmp_path):
    """table1.md opens with a title; this run's rows and the paper's published ones (not rerun)
    are two tables under their own headings, never one table."""
    pub = tmp_path / "paper.yaml"
    pub.write_text("d: {zero_shot: {0: 0.6}, trainable: {1: 0.7}}\nother: {zero_shot: {0: 0.2}}\n")
    base = rows()
    table = report.tables.table1(pd.concat([base, base.assign(protocol="paper")], ignore_index=True), report.tables.published_rows(pub))
    md = report.tables.table1_markdown(table)
    assert md.startswith(report.tables.TABLE1_TITLE + "\n")
    ours, published = _section(md, report.tables.OURS_HEADING), _section(md, report.tables.PUBLISHED_HEADING)
    table_rows = lambda text: [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| dataset")]  # noqa: E731
    assert {r.split(" | ")[2] for r in table_rows(ours)} == {"paper", "corrected"}
    assert {r.split(" | ")[2] for r in table_rows(published)} == {"published"} and len(table_rows(published)) == 2
    assert len(table_rows(md[:md.index("## What each column measures")])) == len(table_rows(ours)) + len(table_rows(published))
    assert md.index(report.tables.OURS_HEADING) < md.index(report.tables.PUBLISHED_HEADING)  # this run first, the paper's for comparison
    none = report.tables.table1_markdown(report.tables.table1(base, report.tables.published_rows(pub, [])))
    assert report.tables.PUBLISHED_HEADING not in none and report.tables.OURS_HEADING in none


def test_caption_length_bins_are_in_numeric_order():
    """The length histogram's bins ("<= 8" ... "> 128", stored in text order) read left to right by
    length in the figure."""
    numeric = ["<= 8", "<= 16", "<= 24", "<= 32", "<= 48", "<= 64", "<= 96", "<= 128", "> 128"]
    as_stored = sorted(numeric)  # what captions_quality.json holds: "<= 128" before "<= 16"
    assert report.captions.length_bins(as_stored) == numeric
    hist = pd.DataFrame([{"dataset": ds, "backbone": "b", "protocol": p, "tokens": t, "captions": i}
                         for ds in ("d", "e") for p in ("corrected", "paper") for i, t in enumerate(as_stored)])
    fig = report.captions.plot_caption_lengths(hist)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == numeric


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends_outside(fig) -> int:
    """Assert every legend of ``fig`` lies outside every axes and inside the figure (figure
    coordinates, after layout); returns how many legends there are."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for leg in legends:
        box = leg.get_window_extent(renderer).transformed(fig.transFigure.inverted())
        assert box.x0 >= -0.01 and box.y0 >= -0.01 and box.x1 <= 1.01 and box.y1 <= 1.01, f"legend cut off: {box}"
        for ax in fig.axes:
            assert not _overlaps(box, ax.get_position()), f"legend {box} on the axes {ax.get_title()!r} ({ax.get_position()})"
    return len(legends)


def _many_methods() -> pd.DataFrame:
    """Per-seed rows of every method of the kit and as many again (twice the methods), on two
    datasets under two protocols, with zero-shot and zero-shot with captions."""
    rng = np.random.default_rng(1)
    methods = [m for m in registry.ordered() if not m.startswith("zero_shot")]
    methods += [f"{m}_v2" for m in methods]
    run = lambda ds, p: {"dataset": ds, "backbone": "b", "protocol": p}  # noqa: E731
    out = [{**run(ds, p), "method": m, "shots": k, "seed": s, "accuracy": float(rng.uniform(0.2, 0.8))}
           for ds in ("d", "e") for p in ("corrected", "realistic") for m in methods for k in (1, 2, 4, 8, 16) for s in range(3)]
    out += [{**run(ds, p), "method": m, "shots": 0, "seed": None, "accuracy": 0.15}
            for ds in ("d", "e") for p in ("corrected", "realistic") for m in ("zero_shot", "zero_shot_captions")]
    return pd.DataFrame(out)


def test_accuracy_vs_shots_stays_readable_with_twice_the_methods():
    """With twice the kit's methods: one legend, outside every panel, naming each method once; the
    paper's methods drawn thicker than any other and the only ones with a ±1 std band."""
    many = _many_methods()
    fig = report.figures.plot_shots(many)
    assert _legends_outside(fig) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == many["method"].nunique() == len(set(labels))
    assert labels[:3] == [registry.label(m) for m in registry.paper_methods()]  # the paper's first
    paper = {colour for m, colour in zip(registry.paper_methods(), report.figures.PAPER_COLOURS) if m in ("adapter", "trainable")}
    for ax in fig.axes:
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        thick = [line.get_linewidth() for line in curves if line.get_color() in paper]
        thin = [line.get_linewidth() for line in curves if line.get_color() not in paper]
        assert len(thick) == 2 and len(thin) == len(curves) - 2 and min(thick) > 2 * max(thin)
        assert len(ax.collections) == 2  # bands: the two paper curves only


def _gains(backbones) -> pd.DataFrame:
    base = rows()
    table = report.stage.summarise(pd.concat([base.assign(backbone=b, accuracy=base["accuracy"] + 0.1 * i) for i, b in enumerate(backbones)]))
    return report.tables.backbone_gains(table)


def test_backbone_gains_legend_is_outside_and_one_backbone_says_so():
    fig = report.figures.plot_backbone_gains(_gains(["b", "big"]))
    assert _legends_outside(fig) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == ["b", "big"]
    one = report.figures.plot_backbone_gains(_gains(["b"]))
    assert _legends_outside(one) == 0  # nothing to tell apart
    assert one.get_suptitle().startswith("One backbone (b)")


def test_every_figure_legend_lies_outside_the_axes():
    """The ablation, the caption lengths and the learning curves put their legends under the panels."""
    effects = pd.DataFrame([{"dataset": ds, "switch": s, "direction": d, "column": c, "effect": 0.1 * i}
                            for ds in ("d", "e") for i, s in enumerate(("a", "b", "c")) for d in report.ablation.DIRECTIONS
                            for c in report.ablation.ABLATION_COLUMNS])
    assert _legends_outside(report.ablation.plot_ablation(effects)) == 1
    hist = pd.DataFrame([{"dataset": "d", "backbone": "b", "protocol": p, "tokens": t, "captions": 5}
                         for p in ("corrected", "paper") for t in ("<= 8", "<= 16")])
    assert _legends_outside(report.captions.plot_caption_lengths(hist)) == 1
    curves = pd.DataFrame([{"dataset": "d", "backbone": "b", "protocol": p, "method": m, "shots": 16, "seed": 1, "lr": lr, "epoch": e,
                            "val_accuracy": 0.5 + 0.01 * e} for p in ("corrected", "realistic") for m in ("trainable", "coop")
                           for lr in (1e-3, 1e-4) for e in range(5)])
    assert _legends_outside(report.figures.plot_curves(curves)) == 1


def test_sensitivity_figure_says_what_the_numbers_in_its_cells_count():
    sens = pd.DataFrame([{"dataset": "d", "backbone": "b", "protocol": "corrected", "shots": 16, "seed": s, "alpha": a, "theta": t,
                          "beta": 1.0, "accuracy": 0.5, "chosen": (a, t) == (0.5, 2.0)} for s in range(3) for a in (0.0, 0.5)
                         for t in (1.0, 2.0)])
    fig = report.figures.plot_sensitivity(sens)
    assert "seeds whose validation search chose" in fig.get_suptitle()
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["", "", "", "3"]  # the three seeds' choice, in its cell


def test_sensitivity_figure_is_a_grid_of_datasets_by_protocols():
    """Three datasets under two protocols: a 2 x 3 grid of maps (as the accuracy-vs-shots figure),
    not one row of six; a dataset missing from a protocol leaves its panel empty."""
    sens = pd.DataFrame([{"dataset": ds, "backbone": "b", "protocol": p, "shots": 16, "seed": 0, "alpha": a, "theta": 1.0, "beta": 1.0,
                          "accuracy": 0.5, "chosen": a == 0.0} for ds in ("d1", "d2", "d3") for p in ("corrected", "realistic")
                         for a in (0.0, 0.5) if (ds, p) != ("d3", "realistic")])
    fig = report.figures.plot_sensitivity(sens)
    maps = [ax for ax in fig.axes if ax.get_title()]
    grid = {(round(ax.get_position().y0, 2), round(ax.get_position().x0, 2)) for ax in fig.axes if ax.get_label() != "<colorbar>"}
    assert len(maps) == 5 and len({y for y, _ in grid}) == 2 and len({x for _, x in grid}) == 3, [ax.get_title() for ax in maps]
    assert [ax.get_title().split(",")[0] for ax in maps][:3] == ["d1 (corrected)", "d2 (corrected)", "d3 (corrected)"]


def test_committed_table1_says_what_captions_add_to_the_adapter_on_every_run(root):
    """04_adapter's caption ablation reaches Table I's markdown: a sentence and a row per K for
    every dataset x protocol of the run."""
    from siglip_adapter.config import load_config
    from siglip_adapter.runs import run_backbones, run_datasets, run_protocols

    text = (root / "results" / "table1.md").read_text()
    keys = pd.read_csv(root / "results" / "text_keys.csv")
    assert "## Is a caption worth it?" in text
    several = len(run_backbones(root)) > 1
    for ds in run_datasets(root):
        for b in run_backbones(root):
            for p in run_protocols(root):
                assert f"**{ds}** ({f'{b}, ' if several else ''}{p}): caption keys against no text keys" in text
                shots = set(keys[(keys["dataset"] == ds) & (keys["backbone"] == b) & (keys["protocol"] == p)]["shots"])
                assert shots == set(load_config(ds, root=root, protocol=p, backbone=b)["shots"])


def test_the_ranking_is_the_mean_rank_over_shots():
    import pytest

    import numpy as np

    from siglip_adapter import report

    rng = np.random.default_rng(0)
    rows = [{"dataset": "d", "backbone": "b", "protocol": p, "method": m, "shots": k, "mean": float(rng.uniform()), "std": 0.0, "n_seeds": 3}
            for p in ("corrected", "paper") for m in ("linear_probe", "adapter", "coop") for k in (1, 4, 16)]
    rows.append({"dataset": "d", "backbone": "b", "protocol": "corrected", "method": "zero_shot", "shots": 0, "mean": 0.99, "std": 0.0,
                 "n_seeds": 1})
    table = pd.DataFrame(rows)
    ranks = report.tables.ranking(table)
    assert set(ranks["protocol"]) == {"corrected"} and set(ranks["method"]) == {"linear_probe", "adapter", "coop"}  # no paper, no zero-shot
    few = table[(table["protocol"] == "corrected") & (table["shots"] > 0)]
    for m, r in ranks.set_index("method").iterrows():
        per_k = [1 + int((few[(few["shots"] == k)]["mean"] > few[(few["shots"] == k) & (few["method"] == m)]["mean"].iloc[0]).sum())
                 for k in (1, 4, 16)]
        assert r["mean_rank"] == pytest.approx(np.mean(per_k))
        assert r["mean_accuracy"] == pytest.approx(few[few["method"] == m]["mean"].mean())
        assert r["at_max_shots"] == pytest.approx(few[(few["method"] == m) & (few["shots"] == 16)]["mean"].iloc[0])
    assert list(ranks["mean_rank"]) == sorted(ranks["mean_rank"])
    text = report.tables.ranking_markdown(ranks)
    assert "**d**" in text and "| Linear probe |" in text


def test_two_backbones_are_two_runs_and_each_gain_is_over_its_own_zero_shot(tmp_path):
    """A run is a dataset on a backbone under a protocol: the same dataset and protocol on two
    backbones stay apart in Table I, its markdown, the ranking and the figures, and each method's
    gain is measured against the zero-shot of its own backbone."""
    base = rows()
    stronger = base.assign(backbone="big", accuracy=base["accuracy"] + 0.2)
    (tmp_path / "none.yaml").write_text("{}\n")
    table = report.tables.table1(pd.concat([base, stronger], ignore_index=True), report.tables.published_rows(tmp_path / "none.yaml"))
    assert list(table.columns) == report.stage.TABLE_COLUMNS and set(table["backbone"]) == {"b", "big"}
    at = table.set_index(["backbone", "method", "shots"])["mean"]
    assert at[("big", "adapter", 16)] == pytest.approx(at[("b", "adapter", 16)] + 0.2)
    gains = report.tables.backbone_gains(table).set_index(["backbone", "method"])
    for bb in ("b", "big"):  # 16-shot mean minus the same backbone's zero-shot, in points
        assert gains.loc[(bb, "adapter"), "gain"] == pytest.approx(100 * (at[(bb, "adapter", 16)] - at[(bb, "zero_shot", 0)]))
        assert gains.loc[(bb, "adapter"), "shots"] == 16
    md = report.tables.table1_markdown(table)
    assert "| d | b | corrected | 30.0 |" in md and "| d | big | corrected | 50.0 |" in md
    assert "big corrected: mean rank" in report.tables.ranking_markdown(report.tables.ranking(table))
    report.figures.plot_backbone_gains(report.tables.backbone_gains(table), tmp_path / "gains.png")
    report.figures.plot_shots(pd.concat([base, stronger], ignore_index=True), tmp_path / "shots.png")
    assert (tmp_path / "gains.png").stat().st_size > 0 and (tmp_path / "shots.png").stat().st_size > 0
