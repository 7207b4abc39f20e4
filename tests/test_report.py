"""Table I from per-seed rows: the numbers are plain means and sample stds of the CSV rows."""

import numpy as np
import pandas as pd
import pytest

from siglip_adapter import report


def rows():
    accs = {1: [0.40, 0.44, 0.42], 16: [0.55, 0.57, 0.59]}
    out = [{"dataset": "d", "backbone": "b", "protocol": "corrected", "method": "adapter", "shots": k, "seed": s, "accuracy": a}
           for k, v in accs.items() for s, a in enumerate(v)]
    out.append({"dataset": "d", "backbone": "b", "protocol": "corrected", "method": "zero_shot", "shots": 0, "seed": None, "accuracy": 0.3})
    return pd.DataFrame(out)


def test_summary_is_mean_and_sample_std(tmp_path):
    s = report.write_stage(rows(), tmp_path / "x.csv", tmp_path / "x.json")
    assert list(s.columns) == report.TABLE_COLUMNS
    s = s.set_index(["method", "shots"])
    assert s.loc[("adapter", 1), "mean"] == np.mean([0.40, 0.44, 0.42])
    assert np.isclose(s.loc[("adapter", 16), "std"], np.std([0.55, 0.57, 0.59], ddof=1))
    assert s.loc[("adapter", 1), "n_seeds"] == 3 and s.loc[("zero_shot", 0), "std"] == 0.0
    assert "shots_16" in (tmp_path / "x.json").read_text()


def test_table_includes_published_numbers_when_recorded(tmp_path):
    pub = tmp_path / "paper.yaml"
    pub.write_text("d: {adapter: {1: 0.5}, zero_shot: {0: null}}\nother: {adapter: {1: 0.9}}\n")
    table = report.table1(rows(), report.published_rows(pub, ["d"]))
    published = table[table["protocol"] == "published"]
    assert len(published) == 1 and published.iloc[0]["mean"] == 0.5
    md = report.table1_markdown(table)
    assert "| d | siglip-b16 | published | – | – | – | 50.0 |" in md and "| d | b | corrected | 30.0 | – | – | 42.0 ± 2.0 |" in md
    assert md.index("| d | siglip-b16 | published") < md.index("| d | b | corrected")  # the paper's numbers first
    assert all(f"**{col}**" in md for col in report.COLUMN_MEANINGS)  # what each column measures


def test_committed_table1_says_what_captions_add_to_the_adapter_on_every_run(root):
    """04_adapter's caption ablation reaches Table I's markdown: a sentence and a row per K for
    every dataset x protocol of the run."""
    from siglip_adapter.config import load_config, run_backbones, run_datasets, run_protocols

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
    ranks = report.ranking(table)
    assert set(ranks["protocol"]) == {"corrected"} and set(ranks["method"]) == {"linear_probe", "adapter", "coop"}  # no paper, no zero-shot
    few = table[(table["protocol"] == "corrected") & (table["shots"] > 0)]
    for m, r in ranks.set_index("method").iterrows():
        per_k = [1 + int((few[(few["shots"] == k)]["mean"] > few[(few["shots"] == k) & (few["method"] == m)]["mean"].iloc[0]).sum())
                 for k in (1, 4, 16)]
        assert r["mean_rank"] == pytest.approx(np.mean(per_k))
        assert r["mean_accuracy"] == pytest.approx(few[few["method"] == m]["mean"].mean())
        assert r["at_max_shots"] == pytest.approx(few[(few["method"] == m) & (few["shots"] == 16)]["mean"].iloc[0])
    assert list(ranks["mean_rank"]) == sorted(ranks["mean_rank"])
    text = report.ranking_markdown(ranks)
    assert "**d**" in text and "| Linear probe |" in text


def test_two_backbones_are_two_runs_and_each_gain_is_over_its_own_zero_shot(tmp_path):
    """A run is a dataset on a backbone under a protocol: the same dataset and protocol on two
    backbones stay apart in Table I, its markdown, the ranking and the figures, and each method's
    gain is measured against the zero-shot of its own backbone."""
    base = rows()
    stronger = base.assign(backbone="big", accuracy=base["accuracy"] + 0.2)
    (tmp_path / "none.yaml").write_text("{}\n")
    table = report.table1(pd.concat([base, stronger], ignore_index=True), report.published_rows(tmp_path / "none.yaml"))
    assert list(table.columns) == report.TABLE_COLUMNS and set(table["backbone"]) == {"b", "big"}
    at = table.set_index(["backbone", "method", "shots"])["mean"]
    assert at[("big", "adapter", 16)] == pytest.approx(at[("b", "adapter", 16)] + 0.2)
    gains = report.backbone_gains(table).set_index(["backbone", "method"])
    for bb in ("b", "big"):  # 16-shot mean minus the same backbone's zero-shot, in points
        assert gains.loc[(bb, "adapter"), "gain"] == pytest.approx(100 * (at[(bb, "adapter", 16)] - at[(bb, "zero_shot", 0)]))
        assert gains.loc[(bb, "adapter"), "shots"] == 16
    md = report.table1_markdown(table)
    assert "| d | b | corrected | 30.0 |" in md and "| d | big | corrected | 50.0 |" in md
    assert "big corrected: mean rank" in report.ranking_markdown(report.ranking(table))
    report.plot_backbone_gains(report.backbone_gains(table), tmp_path / "gains.png")
    report.plot_shots(pd.concat([base, stronger], ignore_index=True), tmp_path / "shots.png")
    assert (tmp_path / "gains.png").stat().st_size > 0 and (tmp_path / "shots.png").stat().st_size > 0
