"""Zero-shot with captions and the authors' trainable model are methods of the one K x seed loop:
their rows equal, value for value and column for column, what the stages computed by their own
loops before (written out here as the oracle: the definitions of the paper's Table I columns)."""

import copy
import math

import pandas as pd
import pytest
import torch
from helpers import toy_run

from siglip_adapter.config import seeds
from siglip_adapter.inputs import Inputs, result_row, selected_on
from siglip_adapter.methods import loop
from siglip_adapter.methods.cache import adapter_logits
from siglip_adapter.methods.loop import accuracy, zero_shot_logits
from siglip_adapter.methods.trainable import fit_authors
from siglip_adapter.methods.zero_shot_captions import caption_zero_shot_logits, search_caption_alpha
from siglip_adapter.store import Features

ZSC = {"method": "caption_mix", "alpha": [0.0, 0.25, 0.5, 0.75, 1.0], "fixed": {"alpha": 0.5, "theta": 2.0, "beta": 0.5}}


def oracle(inp, cfg) -> pd.DataFrame:
    """Table I's first two columns as their own definitions say, one loop each."""
    ti, tc, tl = inp.split("test")
    vi, _, vl = inp.split("val")
    zs = lambda x: zero_shot_logits(x, inp.class_text, inp.scale, inp.bias)  # noqa: E731
    rows = [result_row(cfg, "zero_shot", 0, None, accuracy(zs(ti), tl), accuracy(zs(vi), vl), "none", "none", 0)]
    z = cfg["methods"]["zero_shot_captions"]
    if z["method"] == "fixed_cache":
        k, f = min(cfg["shots"]), z["fixed"]
        for seed in seeds(cfg):
            keys, caption_keys, labels = inp.shots(k, seed)
            logits = adapter_logits(ti, keys, caption_keys, labels, inp.class_text, f["alpha"], f["theta"], f["beta"], inp.scale, inp.bias)
            rows.append(result_row(cfg, "zero_shot_captions", k, seed, accuracy(logits, tl), math.nan, "fixed", "fixed values", 1, **f))
        return pd.DataFrame(rows)
    if tc is None:
        return pd.DataFrame(rows)
    budget = int(cfg["validation"]["per_class"])
    for seed in seeds(cfg) if budget else [None]:
        vi, vc, vl = inp.validation(cfg, budget, seed) if budget else inp.split("val")
        alpha, val_acc = search_caption_alpha(vi, vc, vl, inp.class_text, z["alpha"], inp.scale, inp.bias)
        test = accuracy(caption_zero_shot_logits(ti, tc, inp.class_text, alpha, inp.scale, inp.bias), tl)
        rows.append(result_row(cfg, "zero_shot_captions", 0, seed, test, val_acc, selected_on(cfg), "caption weight grid", len(z["alpha"]),
                               alpha=alpha))
    return pd.DataFrame(rows)


def run_of(protocol: str, scale=1.0, bias=0.0, only_shots=False):
    inp, cfg, _ = toy_run(n_classes=4, dim=16)
    cfg["methods"]["zero_shot_captions"] = copy.deepcopy(ZSC)
    if protocol == "realistic":
        cfg["validation"]["per_class"] = 3
    if protocol == "paper":
        cfg["methods"]["zero_shot_captions"]["method"] = "fixed_cache"
    caption = inp.caption
    if only_shots:  # the test and validation images have no captions
        keep = inp.manifest.loc[inp.manifest["split"] == "train", "image_id"].tolist()
        caption = Features(keep, caption.take(keep), {}, {})
    return Inputs(inp.manifest, inp.image, caption, inp.class_text, scale, bias), cfg


@pytest.mark.parametrize("protocol,scale,bias,only_shots", [
    ("corrected", 1.0, 0.0, False), ("realistic", 1.0, 0.0, False), ("paper", 100.0, 0.0, False),
    ("corrected", 11.713, -2.9137, False),  # SigLIP's logit form (a scale and bias that float32 rounds, as the features are)
    ("realistic", 1.0, 0.0, True), ("paper", 1.0, 0.0, True)])
def test_the_zero_shot_methods_rows_equal_their_definitions(protocol, scale, bias, only_shots):
    inp, cfg = run_of(protocol, scale, bias, only_shots)
    got = loop.method_rows(inp, cfg, loop.names(cfg, kind="zero-shot"))
    want = oracle(inp, cfg)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    ti, tc, _ = inp.split("test")
    fitted = loop.task_for(inp, cfg, 0, None).fitted("zero_shot", {})
    assert torch.equal(fitted.logits(ti), zero_shot_logits(ti, inp.class_text, inp.scale, inp.bias))  # the same logit form
    assert list(got["method"]).count("zero_shot_captions") == {("corrected", False): 1, ("realistic", False): cfg["n_seeds"],
                                                               ("paper", False): cfg["n_seeds"], ("paper", True): cfg["n_seeds"]}.get(
        (protocol, only_shots), 0)


def test_a_killed_zero_shot_stage_resumes_from_its_stored_cells(tmp_path):
    """Cells without a seed are stored and read back like the others: a second run fits nothing."""
    inp, cfg = run_of("realistic")
    first = loop.method_rows(inp, cfg, loop.names(cfg, kind="zero-shot"), store=tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("cell-*.parquet"))
    assert files == sorted(["cell-0-None.parquet", *(f"cell-0-{s}.parquet" for s in seeds(cfg))])
    calls = []
    real = loop.registry.METHODS["zero_shot_captions"]
    loop.registry.METHODS["zero_shot_captions"] = real.__class__(**{**real.__dict__, "fit": lambda t, p: calls.append(1) or real.fit(t, p)})
    try:
        again = loop.method_rows(inp, cfg, loop.names(cfg, kind="zero-shot"), store=tmp_path)
    finally:
        loop.registry.METHODS["zero_shot_captions"] = real
    assert not calls
    pd.testing.assert_frame_equal(again, first, check_exact=True)


def test_the_authors_trainable_model_is_the_one_method_given_the_test_split():
    """Its rows are the authors' loop's (epoch chosen on test, max with the re-scoring), marked
    ``selected_on: test`` with no validation accuracy; no other method's task carries the test
    split."""
    inp, cfg, _ = toy_run(n_classes=4, dim=16)
    cfg["shots"], cfg["n_seeds"] = [1, 2], 2
    cfg["methods"].update(run=["tip_adapter", "trainable"], tip_adapter={"search_scale": [7.0, 300.0], "search_step": [2, 2]},
                          trainable={"method": "authors", "lr": [0.01], "epochs": 2, "eval_every": 1, "patience": None, "weight_decay": 0.0})
    seen = []
    real = loop.registry.METHODS["tip_adapter"]
    loop.registry.METHODS["tip_adapter"] = real.__class__(**{**real.__dict__, "fit": lambda t, p: seen.append(t.test) or real.fit(t, p)})
    try:
        rows = loop.method_rows(inp, cfg)
    finally:
        loop.registry.METHODS["tip_adapter"] = real
    assert seen and all(t is None for t in seen)
    ours = rows[rows["method"] == "trainable"].reset_index(drop=True)
    ti, _, tl = inp.split("test")
    want = []
    for k, seed in loop.grid(cfg):
        keys, caption_keys, labels = inp.shots(k, seed)
        fit = fit_authors(keys, labels, caption_keys, inp.class_text, ti, tl, inp.scale, inp.bias, seed=seed)
        want.append(result_row(cfg, "trainable", k, seed, fit.test_accuracy, math.nan, "test",
                              "epoch on test, then max with a re-scoring", 11, epoch=fit.epoch, rescored=fit.rescored))
    pd.testing.assert_frame_equal(ours[list(want[0])], pd.DataFrame(want), check_exact=True, check_dtype=False)  # NaN elsewhere: floats
    assert list(rows.columns)[-1] == "rescored"
    assert torch.equal(torch.tensor(rows["shots"].tolist()), torch.tensor([k for k, _ in loop.grid(cfg) for _ in range(2)]))
