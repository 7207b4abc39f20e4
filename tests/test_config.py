"""Parameters: merge order, profiles, and clear errors that name the file."""

import shutil

import pytest
import yaml

from siglip_adapter.config import ConfigError, load_config, run_datasets, run_protocols


@pytest.fixture
def params_root(tmp_path, root):
    shutil.copytree(root / "params", tmp_path / "params")
    return tmp_path


def test_real_params_load(root):
    cfg = load_config("fashion_mnist", root=root)
    assert cfg["encoder"]["name"] == "offline-conse" and cfg["dataset"]["per_class"] == 300
    smoke = load_config("fashion_mnist", "smoke", root=root)
    assert smoke["dataset"]["per_class"] < cfg["dataset"]["per_class"] and smoke["run"]["overlay"] == "smoke"
    assert smoke["dataset"]["classnames"] == cfg["dataset"]["classnames"]  # overlays merge, not replace
    assert run_datasets(root) == ["fashion_mnist", "digits"] and run_protocols(root) == ["corrected", "realistic", "paper"]


def test_hub_profile_switches_encoder_and_captioner(params_root):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds["profile"] = "hub"
    (params_root / "params" / "fm_hub.yaml").write_text(yaml.safe_dump(ds))
    cfg = load_config("fm_hub", root=params_root)
    assert cfg["encoder"]["name"] == "siglip" and cfg["encoder"]["model_id"] == "google/siglip-base-patch16-224"
    assert cfg["captions"]["captioner"] == "smolvlm" and cfg["captions"]["summariser"] == "t5"
    assert cfg["encoder"]["max_text_tokens"] == 64


def test_unknown_key_names_file_and_key(params_root):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds["adapter"] = {"thetta": [1.0]}
    (params_root / "params" / "typo.yaml").write_text(yaml.safe_dump(ds))
    with pytest.raises(ConfigError, match=r"typo.yaml.*adapter.thetta"):
        load_config("typo", root=params_root)


@pytest.mark.parametrize("change,match", [({"adapter": {"alpha": [1.5]}}, "alpha in"), ({"shots": [0, 1]}, "shots"),
                                          ({"split": {"fractions": {"train": 0.5, "val": 0.2, "test": 0.1}}}, "summing to 1")])
def test_bad_values_are_refused(params_root, change, match):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds.update(change)
    (params_root / "params" / "bad.yaml").write_text(yaml.safe_dump(ds))
    with pytest.raises(ConfigError, match=match):
        load_config("bad", root=params_root)


def test_missing_file_is_named(params_root):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope", root=params_root)


def test_hub_profile_pins_a_revision_for_each_model(params_root):
    """Every hub model is pinned to a commit, and the commit is part of each cache key."""
    import re

    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds["profile"] = "hub"
    (params_root / "params" / "fm_hub.yaml").write_text(yaml.safe_dump(ds))
    cfg = load_config("fm_hub", root=params_root)
    for rev in (cfg["encoder"]["revision"], cfg["captions"]["vlm_revision"], cfg["captions"]["t5_revision"]):
        assert re.fullmatch(r"[0-9a-f]{40}", rev), rev


def test_outputs_go_to_kaggle_working_when_the_checkout_is_read_only(monkeypatch, tmp_path, root):
    import os

    from siglip_adapter import paths

    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(root))
    monkeypatch.delenv("SIGLIP_ADAPTER_OUTPUT", raising=False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # /kaggle/input/<repo> is read-only
    assert paths.output_root() == paths.Path("/kaggle/working/siglip-adapter")
    monkeypatch.setattr(os, "access", lambda p, mode: True)  # a copy under /kaggle/working writes in place
    assert paths.output_root() == root
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    if not paths.Path("/kaggle/input").is_dir():
        monkeypatch.setattr(os, "access", lambda p, mode: False)
        assert paths.output_root() == root  # outside Kaggle the checkout is always the output root


def test_every_dataset_asks_its_captioner_for_visible_attributes_without_its_classes(root):
    """Each dataset's own caption prompt (the hub captioner's, under every protocol but the
    authors' class-template switch): not the generic default, asks for what is visible, forbids
    repeating itself, and names none of the dataset's classes that its params or data know."""
    from siglip_adapter.captions import caption_prompt, names_class
    from siglip_adapter.config import read_yaml
    default = read_yaml(root / "params" / "defaults.yaml")["captions"]["vlm_prompt"]
    names = [p.stem for p in (root / "params").glob("*.yaml") if p.stem not in ("defaults", "run", "paper_table1")]
    assert {"fashion_mnist", "digits", "food101", "eurosat", "dtd", "oxford_pets", "caltech101"} <= set(names)
    for name in names:
        cfg = load_config(name, root=root, protocol="corrected")
        c, d = cfg["captions"], cfg["dataset"]
        prompt = caption_prompt({k: c[k] for k in ("vlm_prompt", "vlm_prompt_class", "class_template")}, "ANY CLASS")
        assert prompt == c["vlm_prompt"] != default, name  # no class filled in; the dataset's own words
        low = prompt.lower()
        assert "can see" in low and "do not repeat" in low, name
        classes = list(d.get("classnames") or []) + list((d.get("class_map") or {}).values()) + list(d.get("class_map") or {})
        if name == "digits":  # the class folders sources/digits.py writes
            classes += [str(n) for n in range(10)]
        assert not [n for n in classes if names_class(prompt, n)], name


def test_every_method_has_its_parameters_for_every_dataset_protocol_and_profile(root):
    """The same methods run unchanged on the paper's datasets: every method of ``methods.run``
    resolves its parameters (and those of the method it starts from) under every protocol (profiles
    change only the encoder, the captioner and sharding)."""
    from siglip_adapter import methods

    names = sorted(p.stem for p in (root / "params").glob("*.yaml") if p.stem not in ("defaults", "run", "paper_table1"))
    assert {"food101", "eurosat", "dtd", "oxford_pets", "caltech101"} <= set(names)
    for ds in names:
        for protocol in run_protocols(root):
            cfg = load_config(ds, root=root, protocol=protocol)
            assert set(methods.names(cfg)) == {"linear_probe", "tip_adapter", "tip_adapter_f", "clip_adapter", "gda", "idea", "coop",
                                               "adapter", "trainable"}
            for name in methods.names(cfg):
                params = methods.params_of(cfg, name)
                assert params, (ds, protocol, name)
                if name in ("trainable", "tip_adapter_f"):
                    assert params["start"] == methods.params_of(cfg, {"trainable": "adapter", "tip_adapter_f": "tip_adapter"}[name])
