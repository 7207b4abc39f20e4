"""Protocols are named sets of switches, and each switch changes exactly what it names.

For every switch, ``corrected`` and ``corrected+<switch>`` are compared on Fashion-MNIST through
the code the stages run: the pixels reaching the encoder, the class names and prompt strings, the
caption prompt and the captions the offline captioner writes, the split, the images read and
captioned, the seeds and shots, the zero-shot logit scale and the two Table I methods. The set of
behaviours that differ must be the one the switch names, and nothing else.
"""

import copy
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from siglip_adapter import captions, data, encoders, stages
from siglip_adapter.sources import build_source
from siglip_adapter.inputs import LOGIT_SCALES, Inputs
from siglip_adapter.config import ConfigError, load_config, read_yaml, seeds

# What each switch may change (offline profile; hub-only settings such as the VLM's beams are
# covered by the caption-settings key test).
EXPECTED = {
    "few_shot_val": {"validation"},
    # The offline captioner names the ImageNet tower's labels, so the pixels reach its captions.
    "imagenet_preprocess": {"pixels", "captions"},
    "author_classnames": {"classnames", "class_prompts"},
    "author_templates": {"class_prompts"},
    "author_caption_prompt": {"caption_prompts", "captions"},
    "author_decoding": {"captions"},
    "author_summary": {"captions"},
    "captions_for_shots_only": {"captioned_ids"},
    "author_captioner": {"captioner_model"},
    "author_splits": {"split", "read_ids", "captioned_ids"},
    "one_seed_42": {"seeds", "read_ids", "captioned_ids"},
    "author_shots": {"shots", "read_ids", "captioned_ids"},
    "cosine100_zero_shot": {"logit_scale"},
    "fixed_idea_cache": {"column2"},
    "author_trainable": {"trainable"},
    # No validation image: the validation setting, and one value per hyper-parameter where a method would search.
    "support_only": {"validation", "method_values"},
}


def _digest(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.numpy().round(5).tolist()
    return hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory, root):
    encoders_by_setting = {}
    image = None

    def observe(protocol: str) -> dict:
        nonlocal image
        cfg = load_config("fashion_mnist", "smoke", root=root, protocol=protocol)
        source = build_source(cfg)
        key = json.dumps(cfg["encoder"], sort_keys=True)
        if key not in encoders_by_setting:
            encoders_by_setting[key] = encoders.build_encoder(cfg)
        enc = encoders_by_setting[key]
        s = cfg["split"]
        manifest = data.make_manifest(source, cfg["dataset"].get("per_class"), s["fractions"], s["seed"], s["method"],
                                      s["val_from_train"], keep_source_test=s["keep_source_test"])
        image = image or source.open(source.ids[0])
        sample = [source.ids[int(np.flatnonzero(source.labels == c)[0])] for c in range(3)]
        names = dict(zip(source.ids, [source.classnames[i] for i in source.labels]))
        cap = captions.captioners.build_captioner(cfg, enc)
        finishing = captions.summarise.Finishing.from_config(cfg, enc, None)
        settings = captions.make.caption_settings(cap, finishing)
        caps = captions.make.caption_images(source, sample, cap, finishing, settings, captions.make.caption_store(tmp_path_factory.mktemp("c"), settings),
                                            captions.make.Batches(num_workers=0), classnames=names)
        return {
            "pixels": _digest(enc.preprocess(image)),
            "classnames": source.classnames,
            "class_prompts": [cfg["dataset"]["template"].format(n) for n in source.classnames],
            "caption_prompts": [cap.prompt_for(names[i]) for i in sample],
            "captions": caps["caption"].tolist(),
            "captioner_model": cfg["captions"]["vlm_model_id"],
            "split": data.manifest_hash(manifest),
            "read_ids": _digest(stages.split.ids_to_read(manifest, cfg)),
            "captioned_ids": _digest(stages.split.ids_to_caption(manifest, cfg)),
            "seeds": seeds(cfg),
            "shots": cfg["shots"],
            "validation": (cfg["validation"]["per_class"], cfg["validation"]["images"]),
            "method_values": _digest(_values(cfg["methods"])),
            "logit_scale": LOGIT_SCALES.get(cfg["methods"]["zero_shot"]["logit_form"]),
            "column2": cfg["methods"]["zero_shot_captions"]["method"],
            "trainable": cfg["methods"]["trainable"]["method"],
            "_captions": caps,
            "_names": [names[i] for i in sample],
        }

    return observe


def _values(methods: dict) -> dict:
    """The methods' parameters less the three settings observed on their own (logit form, column 2, column 3)."""
    out = copy.deepcopy(methods)
    out["zero_shot"].pop("logit_form")
    out["zero_shot_captions"].pop("method")
    out["trainable"].pop("method")
    return out


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not k.startswith("_") and a[k] != b[k]}


def test_every_paper_switch_is_tested(root):
    defaults = read_yaml(root / "params" / "defaults.yaml")
    assert set(defaults["switches"]) == set(EXPECTED)
    assert set(defaults["protocols"]["paper"]) == set(EXPECTED) - {"few_shot_val", "support_only"}


@pytest.mark.parametrize("switch", sorted(EXPECTED))
def test_a_switch_changes_exactly_what_it_names(behaviour, switch):
    base, on = behaviour("corrected"), behaviour(f"corrected+{switch}")
    assert _changed(base, on) == EXPECTED[switch]
    if switch == "author_caption_prompt":  # the offline captioner honours it by its effect
        assert all(n.lower().replace("/", " or ") in c.lower() for n, c in zip(on["_names"], on["_captions"]["caption"]))
        assert not any(n.lower().replace("/", " or ") in c.lower() for n, c in zip(base["_names"], base["_captions"]["caption"]))
    if switch == "author_decoding":
        assert all(c.startswith("User: ") and "Assistant: " in c for c in on["_captions"]["caption"])
    if switch == "author_summary":
        assert (on["_captions"]["n_tokens"] == 64).all() and (base["_captions"]["n_tokens"] < 64).all()


def test_paper_minus_a_switch_changes_only_that(behaviour):
    paper, minus = behaviour("paper"), behaviour("paper-author_templates")
    assert _changed(paper, minus) == {"class_prompts"}


def test_protocol_names_are_checked(root):
    with pytest.raises(ConfigError, match="unknown protocol 'papr'"):
        load_config("fashion_mnist", root=root, protocol="papr")
    with pytest.raises(ConfigError, match="unknown switch 'imagenet'"):
        load_config("fashion_mnist", root=root, protocol="corrected+imagenet")
    with pytest.raises(ConfigError, match="does not turn 'author_shots' on"):
        load_config("fashion_mnist", root=root, protocol="corrected-author_shots")


def test_a_dataset_specialises_a_switch(root):
    eurosat = load_config("eurosat", root=root, protocol="paper")
    assert eurosat["shots"] == [4] and eurosat["split"]["method"] == "official"
    assert eurosat["captions"]["vlm_prompt_class"] == "template_first_char"
    assert captions.captioners.caption_prompt(eurosat["captions"], "Forest") == "a"  # the VLM is asked "a", as in their script
    food = load_config("food101", root=root, protocol="paper")
    assert food["captions"]["vlm_model_id"].endswith("SmolVLM-256M-Instruct") and food["dataset"]["template"] == "a photo of a {}, a type of food."
    assert load_config("dtd", root=root, protocol="corrected")["dataset"]["template"] == "{} texture."  # corrected: the field's


def test_shuffled_split_is_one_seeded_permutation(root):
    from siglip_adapter.sources.fashion_mnist import ArraySource

    x = np.zeros((60, 2, 2), dtype=np.uint8)
    source = ArraySource({"train": (x[:50], np.arange(50) % 5), "test": (x[50:], np.arange(10) % 5)}, [f"c{i}" for i in range(5)])
    fr = {"train": 0.7, "val": 0.2, "test": 0.1}
    m = data.make_manifest(source, None, fr, 42, "shuffled")
    assert m["split"].value_counts().to_dict() == {"train": 42, "val": 12, "test": 6} and set(m["split_method"]) == {"shuffled"}
    ids = np.sort(np.asarray(source.ids, dtype=object))
    perm = ids[np.random.default_rng(42).permutation(len(ids))]
    assert set(m.loc[m["split"] == "test", "image_id"]) == set(perm[:6])  # the first cut of the seed-42 permutation
    from siglip_adapter.sources.base import Source

    folder_like = Source("folder", "r", source.classnames, source.ids, source.labels, splits=None)  # no splits of its own
    assert data.make_manifest(folder_like, None, fr, 42, "shuffled").equals(m)
    kept = data.make_manifest(source, None, fr, 42, "shuffled", keep_source_test=True)
    assert set(kept.loc[kept["split"] == "test", "image_id"]) == {i for i in source.ids if i.startswith("test/")}


def test_few_shot_validation_draws_min_k_4_per_class_from_val():
    from siglip_adapter.store import Features

    rows = [(f"v{c}_{n}", c, f"c{c}", "val", "stratified") for c in range(3) for n in range(10)]
    rows += [(f"t{c}_{n}", c, f"c{c}", s, "stratified") for c in range(3) for n, s in enumerate(["train"] * 8 + ["test"] * 2)]
    manifest = pd.DataFrame(rows, columns=data.MANIFEST_COLUMNS)
    feats = Features(manifest["image_id"].tolist(), torch.eye(len(manifest)), {}, {})
    inp = Inputs(manifest, feats, feats, torch.zeros(3, len(manifest)), 1.0, 0.0)
    cfg = {"validation": {"per_class": 4}}
    for k, per_class in ((1, 1), (2, 2), (8, 4), (16, 4)):
        images, _, labels = inp.validation(cfg, k, seed=3)
        assert torch.bincount(labels).tolist() == [per_class] * 3
        ids = {manifest["image_id"][int(i)] for i in images.argmax(1)}
        assert all(i.startswith("v") for i in ids)  # drawn from the validation split only
    a, _, _ = inp.validation(cfg, 8, seed=3)
    b, _, _ = inp.validation(cfg, 8, seed=4)
    assert not torch.equal(a, b)  # a new draw per seed
    full, _, _ = inp.validation({"validation": {"per_class": 0}}, 1, seed=3)
    assert len(full) == 30


def test_authors_trainable_reports_the_best_test_epoch():
    from siglip_adapter.methods.trainable import fit_authors

    g = torch.Generator().manual_seed(0)
    classes = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    def draw(n):
        labels = torch.arange(4).repeat(n)
        return torch.nn.functional.normalize(classes[labels] + 0.8 * torch.randn(len(labels), 16, generator=g), dim=-1), labels
    shots, shot_labels = draw(2)
    test, test_labels = draw(25)
    fit = fit_authors(shots, shot_labels, shots, classes, test, test_labels, scale=100.0, seed=42)
    assert 1 <= fit.epoch <= 10 and fit.test_accuracy >= fit.rescored
    # The number it reports is the best over epochs on test: the final epoch's does not exceed it.
    assert fit.test_accuracy >= float((fit.model(test).argmax(-1) == test_labels).float().mean())


def test_a_protocol_that_changes_no_features_recomputes_nothing(tmp_path, root):
    """``realistic`` changes only how hyper-parameters are selected: its captions and features are
    the ones ``corrected`` made, found in the dataset's shared stores; nothing is computed again."""
    from siglip_adapter.paths import RunPaths

    done = {}
    for protocol in ("corrected", "realistic"):
        cfg = load_config("fashion_mnist", "smoke", root=root, protocol=protocol)
        paths = RunPaths(tmp_path, "fashion_mnist", "smoke", protocol).ensure()
        source = build_source(cfg)
        manifest = stages.split.build_manifest(cfg, paths, source)
        enc = encoders.build_encoder(cfg)
        cap = captions.captioners.build_captioner(cfg, enc)
        calls = []
        describe = cap.describe
        cap.describe = lambda images, names=None: calls.append(len(images)) or describe(images, names)
        stages.captions.run_captions(cfg, paths, source, manifest, enc, cap, captions.summarise.build_summariser(cfg))
        report = stages.embed.embed_all(cfg, paths, source, manifest, enc)
        done[protocol] = (calls, report, json.loads(paths.features_index.read_text()))
    calls, report, index = done["realistic"]
    assert done["corrected"][0] and calls == []  # no image captioned again
    assert report["reused"].all()  # every feature kind found in the store
    assert index == done["corrected"][2]  # the same entries


class _Labels:
    """An encoder stand-in whose ImageNet tower always names the same three labels."""

    model_id = "fake"
    has_label_tower = True

    def cache_fields(self):
        return {"encoder": "fake"}

    def top_labels(self, images, n):
        return [[("tabby", 0.5), ("tiger cat", 0.3), ("lynx", 0.2)][:n] for _ in images]


@pytest.mark.parametrize("mode,named", [("none", False), ("template_first_char", False), ("template", True)])
def test_the_offline_captioner_names_the_class_only_when_the_prompt_gives_it(mode, named):
    prompting = {"vlm_prompt": "", "vlm_prompt_class": mode, "class_template": "a photo of the number {}.", "keep_chat_prompt": False}
    cap = captions.captioners.LabelCaptioner(_Labels(), 3, prompting)
    # Class "3" occurs in the default prompt "top-3 ImageNet labels": that alone must not name it.
    text = cap.describe([None], ["3"])[0]
    assert text == ("a photo of a 3, or possibly a tabby or a tiger cat" if named else "a photo of a tabby, or possibly a tiger cat or a lynx")


def test_nothing_is_chosen_on_test_outside_the_authors_trainable(root):
    """Every committed result row says what chose its hyper-parameters: test only where the
    protocol turns the authors' trainable model on (their epoch was picked on test)."""
    from siglip_adapter.report.stage import STAGE_FILES, TEXT_KEY_FILE

    files = sorted(f for stage in (*STAGE_FILES, TEXT_KEY_FILE) for f in (root / "results" / "runs").glob(f"*/*/*/{stage}.csv"))
    assert len(files) == len(list((root / "results" / "runs").glob("*/*/*/03_zero_shot.csv"))) * 4
    for f in files:
        rows = pd.read_csv(f)
        cfg = load_config(rows["dataset"].iloc[0], root=root, protocol=rows["protocol"].iloc[0])
        on_test = rows[rows["selected_on"] == "test"]
        if "author_trainable" in cfg["switches"]:
            assert set(on_test["method"]) <= {"trainable"}, f
        else:
            assert on_test.empty, f
        expected = ("none" if cfg["validation"]["images"] == "none" else "val" if cfg["validation"]["per_class"] == 0
                    else f"val_min_k_{cfg['validation']['per_class']}")
        searched = rows[rows["method"].isin(cfg["methods"]["run"]) & ~rows.index.isin(on_test.index)]  # every method of the run
        own_rule = searched["search"].str.startswith("none")  # a method that chooses nothing (CLAP, ZS-LP, TaskRes) says so
        assert (searched.loc[own_rule, "selected_on"] == "none").all() and (searched.loc[~own_rule, "selected_on"] == expected).all(), f
