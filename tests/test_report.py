"""Table I from per-seed rows: the numbers are plain means and sample stds of the CSV rows."""

import numpy as np
import pandas as pd

from siglip_adapter import report


def rows():
    accs = {1: [0.40, 0.44, 0.42], 16: [0.55, 0.57, 0.59]}
    out = [{"dataset": "d", "protocol": "corrected", "method": "adapter", "shots": k, "seed": s, "accuracy": a}
           for k, v in accs.items() for s, a in enumerate(v)]
    out.append({"dataset": "d", "protocol": "corrected", "method": "zero_shot", "shots": 0, "seed": None, "accuracy": 0.3})
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
    assert "| d | published | – | – | – | 50.0 |" in md and "| d | corrected | 30.0 | – | – | 42.0 ± 2.0 |" in md
    assert md.index("| d | published") < md.index("| d | corrected")  # the paper's numbers first
    assert all(f"**{col}**" in md for col in report.COLUMN_MEANINGS)  # what each column measures


def test_committed_table1_says_what_captions_add_to_the_adapter_on_every_run(root):
    """04_adapter's caption ablation reaches Table I's markdown: a sentence and a row per K for
    every dataset x protocol of the run."""
    from siglip_adapter.config import load_config, run_datasets, run_protocols

    text = (root / "results" / "table1.md").read_text()
    keys = pd.read_csv(root / "results" / "text_keys.csv")
    assert "## Is a caption worth it?" in text
    for ds in run_datasets(root):
        for p in run_protocols(root):
            assert f"**{ds}** ({p}): caption keys against no text keys" in text
            shots = set(keys[(keys["dataset"] == ds) & (keys["protocol"] == p)]["shots"])
            assert shots == set(load_config(ds, root=root, protocol=p)["shots"])
