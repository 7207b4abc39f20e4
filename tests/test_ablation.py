"""The ablation: its variants, that a variant is the stage pipeline restricted to Table I's
columns, that it recomputes only what its switch changes, and the effects it reports."""

import math

import pandas as pd
import pytest

from siglip_adapter import ablation, captions, report, stages
from siglip_adapter.inputs import load_inputs
from siglip_adapter.config import ConfigError, load_config, read_yaml
from siglip_adapter.sources import build_source
from siglip_adapter.encoders import build_encoder
from siglip_adapter.methods import loop
from siglip_adapter.paths import RunPaths


def test_every_paper_switch_is_turned_on_and_off_alone(root):
    paper = read_yaml(root / "params" / "defaults.yaml")["protocols"]["paper"]
    got = ablation.variants(root)
    assert got[:2] == [("corrected", "", "base"), ("paper", "", "base")]
    assert {(s, d) for _, s, d in got[2:]} == {(s, d) for s in paper for d in ("on", "off")}
    for protocol, switch, direction in got[2:]:
        on = load_config("fashion_mnist", root=root, protocol=protocol)["switches"]
        assert on == ([switch] if direction == "on" else [s for s in paper if s != switch])
    with pytest.raises(ConfigError, match=r"--switches: unknown switch 'few_shot_val' \(switches of the 'paper' protocol"):
        ablation.variants(root, ["few_shot_val"])  # a switch of another protocol, not of paper


@pytest.fixture(scope="module")
def smoke_ablation(root, tmp_path_factory):
    return ablation.Ablation("fashion_mnist", "smoke", root, out_root=tmp_path_factory.mktemp("ablation"))


def test_a_variant_is_the_stage_pipeline_at_its_smallest_shots(smoke_ablation, root, tmp_path):
    """The corrected variant equals what the notebooks' stage functions give for the same run
    (files written, read back) at K = 1."""
    got = smoke_ablation.run_variant("corrected")
    cfg = load_config("fashion_mnist", "smoke", root, "corrected")
    paths = RunPaths(tmp_path, "fashion_mnist", "smoke", "corrected").ensure()
    source, encoder = build_source(cfg), build_encoder(cfg)
    manifest = stages.split.build_manifest(cfg, paths, source)
    stages.captions.run_captions(cfg, paths, source, manifest, encoder, captions.captioners.build_captioner(cfg, encoder), captions.summarise.build_summariser(cfg))
    stages.embed.embed_all(cfg, paths, source, manifest, encoder)
    inp = load_inputs(paths, cfg)
    want = pd.concat([loop.method_rows(inp, cfg, names) for names in (["zero_shot", "zero_shot_captions"], ["trainable"])], ignore_index=True)
    want = want[want["method"].isin(ablation.COLUMNS) & want["shots"].isin([0, 1])]
    key = ["method", "shots", "seed"]
    merged = got.merge(want, on=key, suffixes=("", "_stages"))
    assert len(merged) == len(want) == len(got) and set(got["method"]) == set(ablation.COLUMNS)
    assert (merged["accuracy"] == merged["accuracy_stages"]).all()
    assert set(got.loc[got["method"] == "trainable", "shots"]) == {1}


class _Spy:
    def __init__(self, obj, name):
        self.calls, self.obj, self.name, self.orig = [], obj, name, getattr(obj, name)

    def __enter__(self):
        def wrapped(*a, **k):
            self.calls.append(len(a[0]))
            return self.orig(*a, **k)

        setattr(self.obj, self.name, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(self.obj, self.name, self.orig)


def test_a_variant_computes_only_what_its_switch_changes(smoke_ablation):
    a = smoke_ablation
    a.run_variant("corrected")
    encoder = a.encoder(a.config("corrected"))

    def spied(protocol, enc=encoder):
        with _Spy(enc, "tower_pixels") as tower, _Spy(enc, "encode_texts") as text:
            a.run_variant(protocol)
        return sum(tower.calls), sum(text.calls)

    assert spied("corrected+cosine100_zero_shot") == (0, 0)  # a scoring switch: nothing encoded again
    assert spied("corrected+author_trainable") == (0, 0)
    tower, text = spied("corrected+author_caption_prompt")  # new captions from the stored labels: their texts only
    assert tower == 0 and text > 0
    assert spied("corrected+author_caption_prompt") == (0, 0)  # and once made, kept
    # Another preprocessing is another encoder whose image tower runs each image once.
    imagenet = a.encoder(a.config("corrected+imagenet_preprocess"))
    assert imagenet is not encoder
    tower, _ = spied("corrected+imagenet_preprocess", imagenet)
    assert tower > 0
    assert spied("corrected+imagenet_preprocess", imagenet)[0] == 0


def test_the_offline_captioner_reads_the_labels_the_tower_stored(smoke_ablation):
    """Labels from the stored tower rows equal those of a fresh pass over the decoded images."""
    cfg = smoke_ablation.config("corrected")
    source = build_source(cfg)
    encoder = build_encoder(cfg)
    ids = source.ids[:6]
    stored = stages.captions.captioner_for(cfg, smoke_ablation.store, source, encoder)
    fresh = captions.captioners.build_captioner(cfg, encoder)
    assert stored.reads_ids and not fresh.reads_ids
    assert stored.describe_ids(ids) == fresh.describe(source.load(ids))


def _rows(values: dict) -> pd.DataFrame:
    """Ablation rows from {(variant, method): [accuracy per seed]}."""
    out = []
    for (variant, method), accs in values.items():
        direction = "base" if variant in ("corrected", "paper") else ("on" if "+" in variant else "off")
        switch = "" if direction == "base" else variant.split("+" if direction == "on" else "-", 1)[1]
        out += [{"dataset": "d", "variant": variant, "switch": switch, "direction": direction, "method": method, "shots": 1,
                 "seed": n, "accuracy": a} for n, a in enumerate(accs)]
    return pd.DataFrame(out)


def test_effects_are_with_minus_without_in_both_directions():
    rows = _rows({("corrected", "zero_shot"): [0.5], ("corrected", "trainable"): [0.6, 0.8],
                  ("paper", "zero_shot"): [0.3], ("paper", "trainable"): [0.4],
                  ("corrected+s", "zero_shot"): [0.2], ("corrected+s", "trainable"): [0.7, 0.7],
                  ("paper-s", "zero_shot"): [0.35], ("paper-s", "trainable"): [0.1]})
    e = report.ablation.ablation_effects(rows).set_index(["switch", "direction", "column"])
    assert e.loc[("s", "on", "zero_shot"), "effect"] == pytest.approx(0.2 - 0.5)
    assert e.loc[("s", "on", "trainable"), "effect"] == pytest.approx(0.7 - 0.7)
    assert e.loc[("s", "off", "zero_shot"), "effect"] == pytest.approx(0.3 - 0.35)
    assert e.loc[("s", "off", "trainable"), "effect"] == pytest.approx(0.4 - 0.1)
    assert e.loc[("s", "on", "trainable"), "n_seeds_with"] == 2
    assert math.isnan(e.loc[("s", "on", "zero_shot_captions"), "effect"])  # no such column: not a zero


def test_the_sentence_and_the_table_name_the_biggest_switch_first():
    rows = _rows({("corrected", "zero_shot"): [0.5], ("paper", "zero_shot"): [0.3],
                  ("corrected+small", "zero_shot"): [0.52], ("paper-small", "zero_shot"): [0.31],
                  ("corrected+big", "zero_shot"): [0.5], ("paper-big", "zero_shot"): [0.7]})
    effects = report.ablation.ablation_effects(rows)
    sentence = report.ablation.ablation_sentence("d", effects)
    assert sentence.startswith("On d, `big` moves Table I the most: turned off alone from paper it changes Zero-shot by -40.0 points")
    md = report.ablation.ablation_markdown(effects, rows)
    assert md.index("| `big` |") < md.index("| `small` |")
    fig = report.ablation.plot_ablation(effects)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["big", "small"]


def test_committed_ablation_covers_every_dataset_and_switch(root):
    """make repro's ablation ran every switch both ways on every dataset of the run."""
    from siglip_adapter.runs import run_datasets

    paper = read_yaml(root / "params" / "defaults.yaml")["protocols"]["paper"]
    rows = report.ablation.read_ablation(root / "results", run_datasets(root))
    assert set(rows["dataset"]) == set(run_datasets(root))
    for ds, g in rows.groupby("dataset"):
        assert set(g["variant"]) == {"corrected", "paper"} | {f"corrected+{s}" for s in paper} | {f"paper-{s}" for s in paper}, ds
        on_test = g[g["selected_on"] == "test"]  # only the authors' trainable model chooses on test
        allowed = {v for v in g["variant"] if "author_trainable" in load_config(ds, root=root, protocol=v)["switches"]}
        assert set(on_test["variant"]) <= allowed and set(on_test["method"]) <= {"trainable"}, ds
    md = (root / "results" / "ablation.md").read_text()
    assert all(f"## {ds}" in md for ds in run_datasets(root)) and (root / "results" / "figures" / "ablation.png").is_file()
