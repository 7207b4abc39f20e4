"""The support_only protocol (CLAP's point): no validation image at all. Every method runs, nothing
reads the validation split, and each takes the rule its row states: its authors' values for a run
without validation, the last epoch, or the one value per hyper-parameter the switch gives."""

import copy
import math

import pandas as pd
import pytest
import torch

from helpers import toy_run
from siglip_adapter.config import load_config
from siglip_adapter.methods import loop
from siglip_adapter.methods.loop import NO_VALIDATION, method_rows, peer_unit


@pytest.fixture(scope="module")
def support_only(root):
    """A toy run under the real support_only protocol's parameters (params/defaults.yaml), small epochs."""
    real = load_config("digits", root=root, protocol="support_only")
    inp, cfg, _ = toy_run(n_classes=4, dim=16)
    cfg = {**cfg, "protocol": "support_only", "validation": real["validation"], "methods": copy.deepcopy(real["methods"])}
    small = {"lp_pp": {"epochs": 12}, "zs_lp": {"epochs": 6}, "clap": {"epochs": 6}, "taskres": {"epochs": {1: 5}},
             "tip_adapter_f": {"epochs": 4}, "clip_adapter": {"epochs": {1: 4}}, "ape_t": {"epochs": 4}, "trainable": {"epochs": 4},
             "tip_adapter": {"search_step": [10, 4]}}
    for name, values in small.items():
        cfg["methods"][name].update(values)
    cfg["methods"]["run"] = [n for n in cfg["methods"]["run"] if n not in ("coop", "coop_val")]  # CoOp trains through a text tower the toy has not
    return inp, cfg, real


def test_no_method_reads_the_validation_split(support_only):
    inp, cfg, _ = support_only
    assert cfg["validation"]["images"] == "none"
    rows = method_rows(inp, cfg, loop.names(cfg, kind="zero-shot") + loop.names(cfg))
    poisoned = copy.deepcopy(inp)
    val = poisoned.manifest["split"] == "val"
    poisoned.manifest.loc[val, "label"] = (poisoned.manifest.loc[val, "label"] + 1) % 4
    again = method_rows(poisoned, cfg, loop.names(cfg, kind="zero-shot") + loop.names(cfg))
    pd.testing.assert_frame_equal(rows, again)  # validation labels change nothing: nothing was chosen on them
    assert set(rows["method"]) == {"zero_shot", "zero_shot_captions", *loop.names(cfg)}
    assert (rows["selected_on"] == "none").all() and rows["val_accuracy"].isna().all()
    searched = rows[rows["method"] != "zero_shot"]
    assert (searched["candidates"] == 1).all(), searched[searched["candidates"] != 1][["method", "candidates"]]
    assert all(s.startswith(NO_VALIDATION) or s.startswith("none") for s in rows["search"]), set(rows["search"])


def test_each_method_takes_the_rule_it_states(support_only):
    inp, cfg, real = support_only
    rows = method_rows(inp, cfg).set_index(["method", "shots", "seed"]).sort_index()
    m = real["methods"]
    first = rows.xs(1, level="shots").groupby(level="method").first()
    assert first.loc["tip_adapter", "theta"] == m["tip_adapter"]["init_beta"]
    assert math.isclose(first.loc["tip_adapter", "beta"], m["tip_adapter"]["init_alpha"] * peer_unit(inp.scale))
    assert (first.loc["ape", ["beta", "alpha", "gamma"]].tolist() == m["ape"]["init"])
    for k in (1, 2):
        at = rows.xs(k, level="shots").groupby(level="method").first()
        assert [at.loc["proker", "beta"], at.loc["proker", "lmbda"]] == pytest.approx(m["proker"]["fixed"][k])
    for name in ("lp_pp", "tip_adapter_f", "ape_t", "clip_adapter", "trainable"):  # the last epoch
        epochs = cfg["methods"][name]["epochs"]
        assert (rows.loc[name, "epoch"] == (epochs[1] if isinstance(epochs, dict) else epochs)).all(), name
    assert first.loc["linear_probe", "C"] == m["linear_probe"]["C"][0] and first.loc["gda", "alpha"] == m["gda"]["alpha"][0]
    assert (first.loc["adapter", ["alpha", "theta", "beta"]].tolist() == [m["adapter"][k][0] for k in ("alpha", "theta", "beta")])
    assert first.loc["trainable", "lr"] == m["trainable"]["lr"][0]
    assert torch.isfinite(torch.tensor(rows["accuracy"].to_numpy())).all()


def test_a_method_that_reads_no_validation_is_fitted_once_for_the_protocols_sharing_its_shots(support_only, tmp_path):
    """ZS-LP, CLAP, TaskRes and CLIP-Adapter choose nothing on validation: with a store, the protocols
    that share their shots fit each once (``loop.SharedFits``), and every protocol's rows equal those
    of a fit of its own. A method that chooses on validation is fitted per protocol."""
    import dataclasses

    from siglip_adapter.methods import registry

    inp, cfg, _ = support_only
    with_val = {**cfg, "protocol": "corrected", "validation": {**cfg["validation"], "images": "split"}}
    names = ["zs_lp", "clip_adapter", "gda"]
    assert [loop.SharedFits.applies(registry.get(n)) for n in names] == [True, True, False]
    calls = []
    real = {n: registry.METHODS[n] for n in names}
    try:
        for n in names:
            registry.METHODS[n] = dataclasses.replace(real[n], fit=lambda t, p, _n=n: calls.append(_n) or real[_n].fit(t, p))
        first = loop.run(inp, with_val, names, store=tmp_path).rows
        second = loop.run(inp, cfg, names, store=tmp_path).rows
    finally:
        registry.METHODS.update(real)
    cells = len(loop.grid(cfg))
    assert calls.count("zs_lp") == calls.count("clip_adapter") == cells and calls.count("gda") == 2 * cells
    for rows, c in ((first, with_val), (second, cfg)):
        alone = loop.run(inp, c, names).rows  # no store: fitted here
        pd.testing.assert_frame_equal(rows, alone)
    columns = ["method", "shots", "seed", "accuracy", "epoch"]
    none = lambda rows: rows[rows["method"] != "gda"][columns].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(none(first), none(second))
