"""Parameters: merge order, profiles, and clear errors that name the file."""

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from siglip_adapter.config import ConfigError, load_config
from siglip_adapter.runs import run_datasets, run_protocols


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
    assert run_datasets(root) == ["fashion_mnist", "digits"] and run_protocols(root) == ["corrected", "realistic", "paper", "support_only"]


def test_hub_profile_switches_encoder_and_captioner(params_root):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds["profile"] = "hub"
    (params_root / "params" / "fm_hub.yaml").write_text(yaml.safe_dump(ds))
    cfg = load_config("fm_hub", root=params_root)
    assert cfg["encoder"]["name"] == "siglip" and cfg["encoder"]["model_id"] == "google/siglip-base-patch16-224"
    assert cfg["captions"]["captioner"] == "smolvlm" and cfg["captions"]["summariser"] == "t5"
    # The ConSE encoder's preprocessing does not leak into a hub backbone: its processor decides.
    assert cfg["backbone"] == "siglip-b16" and cfg["encoder"]["max_text_tokens"] == "auto"
    assert all(cfg["encoder"].get(k) is None for k in ("image_size", "mean", "std", "resample"))


@pytest.mark.parametrize("backbone, name, model_id", [("offline-conse", "offline-conse", "offline-conse/efficientnet-lite0+all-MiniLM-L6-v2"),
                                                      ("siglip2-b16", "siglip", "google/siglip2-base-patch16-224"),
                                                      ("siglip2-b16-naflex", "siglip", "google/siglip2-base-patch16-naflex"),
                                                      ("clip-b16", "clip", "openai/clip-vit-base-patch16")])
def test_a_backbone_is_a_parameter_with_its_own_settings_only(params_root, backbone, name, model_id):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    (params_root / "params" / "fm_hub.yaml").write_text(yaml.safe_dump({**ds, "profile": "hub"}))  # SmolVLM captions: any backbone
    cfg = load_config("fm_hub", root=params_root, backbone=backbone)
    assert (cfg["backbone"], cfg["run"]["backbone"], cfg["encoder"]["name"], cfg["encoder"]["model_id"]) == (backbone, backbone, name, model_id)
    own = name == "offline-conse"  # only ConSE, which has no processor, sets its preprocessing
    assert (cfg["encoder"]["mean"] is not None) == own and (cfg["encoder"]["resample"] is not None) == own
    assert cfg["encoder"]["lowercase"] == backbone.startswith("siglip2")
    # A paper switch that sets the preprocessing applies over any backbone (deliberately).
    paper = load_config("fm_hub", root=params_root, backbone=backbone, protocol="corrected+imagenet_preprocess")
    assert paper["encoder"]["mean"] == [0.485, 0.456, 0.406] and paper["encoder"]["resample"] == "bilinear"


def test_an_unknown_backbone_names_where_it_was_asked_and_the_choices(params_root):
    with pytest.raises(ConfigError, match=r"unknown backbone 'siglip3'.*clip-b16"):
        load_config("fashion_mnist", root=params_root, backbone="siglip3")
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    (params_root / "params" / "bb.yaml").write_text(yaml.safe_dump({**ds, "backbone": "clip-b32"}))
    with pytest.raises(ConfigError, match=r"params/bb.yaml: backbone: unknown backbone 'clip-b32'"):
        load_config("bb", root=params_root)


def test_a_backbone_defined_in_an_overlay_is_checked_like_any_section(params_root):
    ov = params_root / "params" / "overlays"
    ov.mkdir(exist_ok=True)
    (ov / "bb.yaml").write_text("profile: hub\nbackbone: mine\nbackbones:\n  mine: {name: clip, model_id: some/clip}\n")
    cfg = load_config("fashion_mnist", overlay="bb", root=params_root)
    assert cfg["encoder"]["name"] == "clip" and cfg["encoder"]["model_id"] == "some/clip"
    (ov / "bb.yaml").write_text("backbones:\n  mine: {name: clip, model_id: some/clip, max_text_tokens: 0}\n"
                                "  conse2: {name: offline-conse, model_id: x}\n")
    with pytest.raises(ConfigError) as e:  # checked though the run does not use them
        load_config("fashion_mnist", overlay="bb", root=params_root)
    msg = str(e.value)
    assert "params/overlays/bb.yaml backbones.mine: encoder.max_text_tokens" in msg
    assert "params/overlays/bb.yaml backbones.conse2" in msg and "no image processor: set image_size, mean, std, resample" in msg


def test_unknown_key_names_file_and_key(params_root):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    ds["methods"] = {"adapter": {"thetta": [1.0]}}
    (params_root / "params" / "typo.yaml").write_text(yaml.safe_dump(ds))
    with pytest.raises(ConfigError, match=r"typo.yaml.*methods.adapter.thetta.*lib/siglip_adapter/methods/adapter.py.*did you mean 'theta'"):
        load_config("typo", root=params_root)


def _with(params_root, change: dict, name: str = "bad", file: str | None = None):
    """Write params/<name>.yaml (fashion_mnist's with ``change`` merged in), or merge ``change`` into
    ``file`` (a path under params/), and load the run."""
    from siglip_adapter.config import deep_merge

    target = params_root / "params" / (file or "fashion_mnist.yaml")
    data = deep_merge(yaml.safe_load(target.read_text()), change)
    (params_root / "params" / (file or f"{name}.yaml")).write_text(yaml.safe_dump(data))
    return load_config("fashion_mnist" if file else name, root=params_root)


# One case per class of mistake: (what is changed, the file the message must name, the key, the words).
MISTAKES = {
    "alpha outside [0, 1]": ({"methods": {"adapter": {"alpha": [0.5, 1.5]}}}, None, "methods.adapter.alpha.1", "less than or equal to 1"),
    "a fixed alpha outside [0, 1]": ({"methods": {"idea": {"alpha": -0.1}}}, None, "methods.idea.alpha", "greater than or equal to 0"),
    "theta <= 0": ({"methods": {"adapter": {"theta": [0.0, 1.0]}}}, None, "methods.adapter.theta.0", "greater than 0"),
    "a method's theta <= 0": ({"methods": {"tip_adapter_wide": {"theta": [-1.0]}}}, None, "methods.tip_adapter_wide.theta.0", "greater than 0"),
    "non-positive shots": ({"shots": [0, 1]}, None, "shots.0", "greater than or equal to 1"),
    "fractions not summing to 1": ({"split": {"fractions": {"train": 0.5}}}, None, "split.fractions", "must be 1"),
    "unknown source": ({"dataset": {"source": "ftp"}}, None, "dataset.source", "'coop', 'fashion-mnist', 'folder' or 'hf'"),
    "unknown split method": ({"split": {"method": "random"}}, None, "split.method", "'stratified'"),
    "unknown method": ({"methods": {"run": ["adapter", "prompt_soup"]}}, None, "methods.run.1", "'coop_val', 'adapter' or 'trainable' (got 'prompt_soup')"),
    "an unknown stand-in": ({"methods": {"instead": {"coop": "coop_fast"}}}, None, "methods.instead.coop", "(got 'coop_fast')"),
    "unknown choice": ({"methods": {"zero_shot": {"logit_form": "cos"}}}, None, "methods.zero_shot.logit_form", "'cosine'"),
    "a method's section at the top": ({"adapter": {"theta": [1.0]}}, None, "adapter", "unknown parameter 'adapter'"),
    "unknown top-level key": ({"shot": [1]}, None, "shot", "unknown parameter 'shot'"),
    "unknown nested key": ({"methods": {"adapter": {"thetta": [1.0]}}}, None, "methods.adapter.thetta", "did you mean 'theta'"),
    "unknown key four deep": ({"methods": {"zero_shot_captions": {"fixed": {"gamma": 1.0}}}}, None, "methods.zero_shot_captions.fixed.gamma",
                              "unknown"),
    "a method module that does not import": ({"methods": {"modules": ["no_such_module_here"]}}, None, "methods.modules.0",
                                             "cannot import 'no_such_module_here'"),
    "unknown key in the dataset's Kaggle layout": ({"dataset": {"kaggle": {"rooot": "/kaggle/input/x"}}}, None, "dataset.kaggle.rooot",
                                                   "did you mean 'root'"),
    "unknown key in a dataset's switch": ({"switches": {"author_shots": {"shotz": [4]}}}, "params/bad.yaml switches.author_shots", "shotz",
                                          "unknown"),
    "unknown key in a profile": ({"profiles": {"hub": {"encoder": {"modle_id": "x"}}}}, "params/defaults.yaml profiles.hub",
                                 "encoder.modle_id", "did you mean 'model_id'"),
    "unknown key in a switch": ({"switches": {"one_seed_42": {"seed_bse": 1}}}, "params/defaults.yaml switches.one_seed_42", "seed_bse",
                                "unknown"),
    "a string for a number": ({"n_seeds": "ten"}, None, "n_seeds", "valid integer"),
    "a float for an integer": ({"encoder": {"batch_size": 8.5}}, None, "encoder.batch_size", "valid integer"),
    "a string for a list": ({"shots": "1,2"}, None, "shots", "valid list"),
    "a string for a boolean": ({"dataset": {"invert": "yes"}}, None, "dataset.invert", "valid boolean"),
    "a number for a string": ({"captions": {"vlm_prompt": 5}}, None, "captions.vlm_prompt", "valid string"),
    "a wrong type in a profile": ({"profiles": {"hub": {"encoder": {"batch_size": "64"}}}}, "params/defaults.yaml profiles.hub",
                                  "encoder.batch_size", "valid integer"),
    "a template without its slot": ({"dataset": {"template": "a photo"}}, None, "dataset.template", "'{}'"),
    "a data path climbing out of the data root": ({"dataset": {"idx_dir": "../../etc"}}, None, "dataset.idx_dir", "outside the data root"),
    "an absolute data path elsewhere": ({"dataset": {"idx_dir": "/etc"}}, None, "dataset.idx_dir", "outside the data root"),
    "a split file climbing out": ({"dataset": {"kaggle": {"root": "images", "split_files": {"train": "../../../etc/passwd"}}}},
                                  None, "dataset.kaggle.split_files.train", "outside the mounted Kaggle input"),
    "an absolute Kaggle root": ({"dataset": {"kaggle": {"root": "/kaggle/input/x"}}}, None, "dataset.kaggle.root",
                                "relative to the folder of dataset.kaggle.dataset_source"),
    "a Kaggle key at the top": ({"dataset": {"dataset_source": "alice/x"}}, None, "dataset_source", "set it there (dataset.kaggle"),
    "a model folder outside the project": ({"encoder": {"model_id": "../../models/siglip"}}, None, "encoder.model_id", "outside"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_kind_of_mistake_names_its_file_and_key(params_root, mistake):
    change, file, key, words = MISTAKES[mistake]
    in_defaults = file is not None and file.startswith("params/defaults.yaml")
    with pytest.raises(ConfigError) as e:
        _with(params_root, change, file="defaults.yaml" if in_defaults else None)
    text = str(e.value)
    assert (file or "params/bad.yaml") in text and key in text and words in text, text


def test_every_mistake_is_reported_at_once(params_root):
    with pytest.raises(ConfigError) as e:
        _with(params_root, {"methods": {"adapter": {"alpha": [2.0], "theta": [0.0]}}, "n_seeds": "x"})
    assert all(k in str(e.value) for k in ("methods.adapter.alpha.0", "methods.adapter.theta.0", "n_seeds")), str(e.value)


def test_a_mistake_in_an_unused_profile_is_found_by_every_run(params_root):
    """The offline run never merges the hub profile, yet a typo there is reported (by its file)."""
    with pytest.raises(ConfigError, match=r"params/defaults.yaml profiles.hub: unknown parameter 'captions.captionr'"):
        _with(params_root, {"profiles": {"hub": {"captions": {"captionr": "smolvlm"}}}}, file="defaults.yaml")


@pytest.mark.parametrize("dataset,overlay,protocol,words", [("fashion_mnistt", "", None, "unknown dataset 'fashion_mnistt'"),
                                                             ("../params/fashion_mnist", "", None, "not a plain name"),
                                                             ("fashion_mnist", "smokey", None, "smokey.yaml"),
                                                             ("fashion_mnist", "", "papr", "unknown protocol 'papr'"),
                                                             ("fashion_mnist", "", "corrected+imagenet", "unknown switch 'imagenet'")])
def test_unknown_dataset_overlay_protocol_or_switch_is_named(params_root, dataset, overlay, protocol, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(dataset, overlay, root=params_root, protocol=protocol)


def test_an_unknown_profile_is_named_with_the_file_that_asked_for_it(params_root):
    with pytest.raises(ConfigError, match=r"params/bad.yaml: profile: unknown profile 'gpu'"):
        _with(params_root, {"profile": "gpu"})


def test_a_dataset_specialising_an_unknown_switch_is_named(params_root):
    with pytest.raises(ConfigError, match=r"params/bad.yaml: switches.author_shotz is not a switch"):
        _with(params_root, {"switches": {"author_shotz": {"shots": [4]}}})


def test_shots_larger_than_a_class_training_images_name_the_file_that_set_them(params_root):
    """Only the data knows how many training images a class has: the manifest check names the
    file that set ``shots``, the class and its count."""
    import pandas as pd

    from siglip_adapter.config import check_shots

    cfg = _with(params_root, {"shots": [1, 2, 16]}, name="many")
    rows = [(f"{c}{i}", c, f"class{c}", "train", "stratified") for c in range(3) for i in range(20 if c else 12)]
    manifest = pd.DataFrame(rows, columns=["image_id", "label", "classname", "split", "split_method"])
    check_shots({**cfg, "shots": [1, 2, 12]}, manifest, params_root)  # 12 fits the smallest class
    with pytest.raises(ConfigError, match=r"params/many.yaml: shots: K=16 .* 1 classes \(e.g. 'class0': 12\)"):
        check_shots(cfg, manifest, params_root)


def test_every_params_file_and_overlay_is_valid(root):
    """The shipped parameters pass their own schema under every protocol, overlays included."""
    names = sorted(p.stem for p in (root / "params").glob("*.yaml") if p.stem not in ("defaults", "run", "paper_table1"))
    for ds in names:
        for overlay in ["", *(p.stem for p in (root / "params" / "overlays").glob("*.yaml"))]:
            for protocol in run_protocols(root):
                load_config(ds, overlay, root=root, protocol=protocol)


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


def test_outputs_never_go_to_kaggle_working_even_when_the_checkout_is_read_only(monkeypatch, tmp_path, root):
    """working/ is the kernel's download: only the archive and its state file go there."""
    import os

    from siglip_adapter import paths

    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(root))
    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.delenv("SIGLIP_ADAPTER_OUTPUT", raising=False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # the kit run straight from its read-only input
    assert paths.output_root() == tmp_path / "temp" / "siglip-adapter"
    monkeypatch.setattr(os, "access", lambda p, mode: True)  # the kernel's copy in temp/ writes in place
    assert paths.output_root() == root
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    assert paths.output_root() == root  # outside Kaggle the checkout is always the output root


def test_every_dataset_asks_its_captioner_for_visible_attributes_without_its_classes(root):
    """Each dataset's own caption prompt (the hub captioner's, under every protocol but the
    authors' class-template switch): not the generic default, asks for what is visible, forbids
    repeating itself, and names none of the dataset's classes that its params or data know."""
    from siglip_adapter.captions.captioners import caption_prompt
    from siglip_adapter.captions.quality import names_class
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
        if name == "digits":  # the class folders kit_tools/digits.py writes
            classes += [str(n) for n in range(10)]
        assert not [n for n in classes if names_class(prompt, n)], name


def test_every_method_has_its_parameters_for_every_dataset_protocol_and_profile(root):
    """The same methods run unchanged on the paper's datasets: every method of ``methods.run``
    resolves its parameters (and those of the method it starts from) under every protocol (their
    files name the hub profile, which changes only the encoder, the captioner and sharding; the
    offline profile's datasets run coop_val in coop's place)."""
    from siglip_adapter.config import in_place
    from siglip_adapter.methods import loop

    names = sorted(p.stem for p in (root / "params").glob("*.yaml") if p.stem not in ("defaults", "run", "paper_table1"))
    assert {"food101", "eurosat", "dtd", "oxford_pets", "caltech101"} <= set(names)
    for ds in names:
        for protocol in run_protocols(root):
            cfg = load_config(ds, root=root, protocol=protocol)
            deviations = set() if protocol == "support_only" else {"tip_adapter_wide", "gda_lw", "clip_adapter_val", "coop_val"}  # nothing to search without validation
            every = {"linear_probe", "lp_pp", "zs_lp", "clap", "taskres", "tip_adapter", "tip_adapter_f", "clip_adapter", "gda", "proker", "ape",
                     "ape_t", "idea", "coop", "adapter", "trainable"} | deviations
            assert set(loop.names(cfg)) == set(in_place(sorted(every), cfg["methods"]["instead"]))  # the offline datasets: coop_val for coop
            for name in loop.names(cfg):
                params = loop.params_of(cfg, name)
                assert params, (ds, protocol, name)
                if name in ("trainable", "tip_adapter_f"):
                    assert params["start"] == loop.params_of(cfg, {"trainable": "adapter", "tip_adapter_f": "tip_adapter"}[name])


def test_the_offline_profile_runs_the_budgeted_coop_in_coops_place(root):
    """``methods.instead``: under every protocol the offline datasets run ``coop_val`` where
    ``methods.run`` names ``coop`` (once, where both are named), the rest unchanged."""
    from siglip_adapter.config import in_place

    for protocol in run_protocols(root):
        cfg = load_config("digits", root=root, protocol=protocol)
        hub = load_config("food101", root=root, protocol=protocol)
        assert cfg["profile"] == "offline" and cfg["methods"]["instead"] == {"coop": "coop_val"}
        assert "coop" not in cfg["methods"]["run"] and "coop_val" in cfg["methods"]["run"], protocol
        assert "coop" in hub["methods"]["run"]
    assert in_place(["a", "coop", "b", "coop_val"], {"coop": "coop_val"}) == ["a", "coop_val", "b"]
    assert in_place(["a", "coop", "b"], {}) == ["a", "coop", "b"]


def test_the_offline_captioner_needs_the_conse_backbone(params_root):
    """The offline captioner reads ConSE's ImageNet classes: on another backbone it is refused at
    load time, naming both files, instead of failing inside 01_captions."""
    with pytest.raises(ConfigError, match=r"params/defaults.yaml: captions.captioner: offline-labels .* backbone 'clip-b16' is a clip"):
        load_config("fashion_mnist", root=params_root, backbone="clip-b16")
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    (params_root / "params" / "fm_hub.yaml").write_text(yaml.safe_dump({**ds, "profile": "hub"}))
    assert load_config("fm_hub", root=params_root, backbone="clip-b16")["captions"]["captioner"] == "smolvlm"


def test_an_image_size_a_hub_backbone_would_ignore_is_refused(params_root):
    ds = yaml.safe_load((params_root / "params" / "fashion_mnist.yaml").read_text())
    (params_root / "params" / "fm_size.yaml").write_text(yaml.safe_dump({**ds, "profile": "hub", "encoder": {"image_size": 384}}))
    with pytest.raises(ConfigError, match=r"params/fm_size.yaml: encoder: image_size is the offline-conse encoder's; a siglip backbone"):
        load_config("fm_size", root=params_root)


def test_checking_the_parameters_without_the_methods_loads_no_torch(root):
    """The images stage runs on every `make repro` (the no-op one too): it checks the parameters
    without the methods' own (which would import the method modules and torch); a full check does."""
    probe = ("import sys; from siglip_adapter.config import load_config; load_config('digits', check_methods={}); "
             "print('torch' in sys.modules)")
    for check, torch_loaded in ((False, "False"), (True, "True")):
        out = subprocess.run([sys.executable, "-c", probe.format(check)], cwd=root, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == torch_loaded, (check, out.stdout, out.stderr)
    assert "load_config(dataset, check_methods=False)" in (root / "lib" / "siglip_adapter" / "fingerprint.py").read_text()
