"""The adapter formulas against a direct, loop-by-loop reading of the paper's eq. 6."""

import itertools
import math

import pytest
import pandas as pd
import torch

from siglip_adapter.methods import cache
from siglip_adapter.methods.loop import accuracy, zero_shot_logits
from siglip_adapter.methods.cache import adapter_logits, grid_accuracies, search_adapter
from siglip_adapter.methods.zero_shot_captions import caption_zero_shot_logits
from helpers import toy_run, unit
from siglip_adapter.methods.loop import Labelled
from siglip_adapter.methods.trainable import TrainableAdapter, fit_trainable
from siglip_adapter.methods.training import Schedule


def eq6_loop(i, image_keys, caption_keys, key_labels, class_text, alpha, theta, beta, scale=1.0, bias=0.0):
    """Eq. 6 for one test feature, one shot and one class at a time."""
    n = class_text.shape[0]
    fewshot = [0.0] * n
    for j in range(image_keys.shape[0]):
        s = (1 - alpha) * float(image_keys[j] @ i) + alpha * float(caption_keys[j] @ i)
        fewshot[int(key_labels[j])] += math.exp(theta * (s - 1))
    return [beta * fewshot[c] + scale * float(class_text[c] @ i) + bias for c in range(n)]


@pytest.mark.parametrize("alpha,theta,beta,scale,bias", [(0.0, 1.0, 1.0, 1.0, 0.0), (0.3, 5.5, 2.0, 1.0, 0.0), (1.0, 10.0, 0.5, 117.3, -12.7)])
def test_adapter_logits_match_direct_loop(toy_cache, alpha, theta, beta, scale, bias):
    c = toy_cache
    got = adapter_logits(c["images"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], alpha, theta, beta, scale, bias)
    want = torch.tensor([eq6_loop(i, c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], alpha, theta, beta, scale, bias) for i in c["images"]])
    assert got.shape == (c["images"].shape[0], c["n"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_beta_zero_is_zero_shot_and_alpha_zero_ignores_captions(toy_cache):
    c = toy_cache
    zs = zero_shot_logits(c["images"], c["class_text"])
    torch.testing.assert_close(adapter_logits(c["images"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], 0.7, 3.0, 0.0), zs)
    scrambled = c["caption_keys"][torch.randperm(c["caption_keys"].shape[0])] * -1
    a = adapter_logits(c["images"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], 0.0, 3.0, 2.0)
    b = adapter_logits(c["images"], c["image_keys"], scrambled, c["key_labels"], c["class_text"], 0.0, 3.0, 2.0)
    torch.testing.assert_close(a, b)


def test_caption_zero_shot_interpolates(toy_cache):
    c = toy_cache
    caps = unit(*c["images"].shape, seed=9)  # each test image's own caption feature
    zs_img = zero_shot_logits(c["images"], c["class_text"])
    zs_cap = zero_shot_logits(caps, c["class_text"])
    torch.testing.assert_close(caption_zero_shot_logits(c["images"], caps, c["class_text"], 0.0), zs_img)
    torch.testing.assert_close(caption_zero_shot_logits(c["images"], caps, c["class_text"], 1.0), zs_cap)
    torch.testing.assert_close(caption_zero_shot_logits(c["images"], caps, c["class_text"], 0.25), 0.75 * zs_img + 0.25 * zs_cap)


def test_search_finds_the_grid_maximum_with_first_tie(toy_cache):
    c = toy_cache
    grid = ([0.0, 0.5, 1.0], [1.0, 4.0], [0.0, 0.5, 2.0])
    choice = search_adapter(c["images"], c["labels"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], *grid)
    best = None
    for a, t, b in itertools.product(*grid):
        acc = accuracy(adapter_logits(c["images"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], a, t, b), c["labels"])
        if best is None or acc > best[3]:
            best = (a, t, b, acc)
    assert (choice.alpha, choice.theta, choice.beta) == best[:3]
    assert choice.val_accuracy == pytest.approx(best[3])


def test_the_grid_is_the_same_whatever_memory_bound_splits_its_thetas(toy_cache, monkeypatch):
    """A validation set large enough to hit ``GRID_ELEMENTS`` splits the thetas into several
    products; the accuracies do not change (one theta per product, two, or all at once)."""
    c = toy_cache
    grid = ([0.0, 0.5, 1.0], [1.0, 2.0, 4.0, 8.0, 15.0], [0.0, 0.5, 2.0])
    args = (c["images"], c["labels"], c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], *grid)
    whole = grid_accuracies(*args)
    per_theta = c["images"].shape[0] * c["n"] * len(grid[2])
    for bound in (1, 2 * per_theta):
        monkeypatch.setattr(cache, "GRID_ELEMENTS", bound)
        assert torch.equal(grid_accuracies(*args), whole)


def test_accuracy_along_a_weight_is_the_logits_own_accuracy_at_ends_and_ties_too():
    """The grid searches count, per weight w, the images ``argmax(zs + w cache)`` gets right, from
    one interval of w per image instead of the logits at every w: equal to the logits' accuracy
    (torch.equal) with weights on the intervals' ends and float steps from them (where rounding decides),
    at w = 0, with zero-shot ties and with classes whose cache values are equal (where argmax's
    tie goes to the lower class)."""
    g = torch.Generator().manual_seed(0)
    m, n = 400, 7
    zs = torch.randn(m, n, generator=g)
    zs[:40, 3] = zs[:40, 5]  # zero-shot ties, label 5 below: argmax picks class 3
    few = torch.rand(4, m, n, generator=g)
    few[:, 40:80, 2] = few[:, 40:80, 4]  # equal cache values for two classes
    labels = torch.randint(0, n, (m,), generator=g)
    labels[:40], labels[40:80] = 5, 4
    y = labels[:, None]
    ends = ((zs - zs.gather(1, y)) / (few.gather(2, y.expand(4, m, 1)) - few))[0, 80:90].flatten()  # some images' exact ends
    ends = ends[ends.isfinite() & (ends > 0)]
    ulps = torch.arange(-4, 5, dtype=torch.float32)[:, None] * 2.0 ** -23  # on each end and a few float steps either side
    weights = torch.cat([torch.tensor([0.0, 0.05, 0.5, 1.0, 3.0]), (ends * (1 + ulps)).flatten()])
    logits_accuracy = torch.stack([((zs + w * few).argmax(-1) == labels).float().mean(-1) for w in weights], -1)
    assert torch.equal(cache.accuracy_along(zs, few, labels, weights), logits_accuracy)


@pytest.mark.parametrize("alpha,beta", [(0.4, 0.1), (0.0, 0.1), (0.4, 0.0), (0.0, 0.0)])
def test_trainable_starts_as_training_free_and_learns_the_shots_whatever_alpha_and_beta(toy_cache, alpha, beta):
    """At alpha = 0 (no caption term) and at beta = 0 (no cache term) too, the learned parts still
    move the logits: the projector acts on the query everywhere, the latent offsets on both keys."""
    c = toy_cache
    args = (c["image_keys"], c["caption_keys"], c["key_labels"], c["class_text"], alpha, 2.0, beta)
    model = TrainableAdapter(*args)
    with torch.no_grad():
        torch.testing.assert_close(model(c["images"]), adapter_logits(c["images"], *args))
    # Each part alone changes the logits.
    for part in ("projector", "latent"):
        moved = TrainableAdapter(*args)
        with torch.no_grad():
            (moved.projector.weight if part == "projector" else moved.latent).add_(0.1)
            changed = not torch.allclose(moved(c["images"]), model(c["images"]))
        assert changed or (part == "latent" and beta == 0), part
    # Validation = the shots themselves: the learned parts must fit them (0.33 -> 0.58 at alpha 0.4,
    # beta 0.1 when measured), and the model returned is the one whose validation accuracy was recorded.
    shots = Labelled(c["image_keys"], c["caption_keys"], c["key_labels"])
    fit = fit_trainable(shots, shots, c["class_text"], {"alpha": alpha, "theta": 2.0, "beta": beta}, Schedule([0.01], 30, patience=5))
    start = accuracy(adapter_logits(c["image_keys"], *args), c["key_labels"])
    assert fit.epoch > 0 and fit.val_accuracy > start + 0.15
    with torch.no_grad():
        assert accuracy(fit.model(c["image_keys"]), c["key_labels"]) == pytest.approx(fit.val_accuracy)


def test_text_key_variants_change_only_the_text_keys():
    """Class-name keys are each shot's class prompt in its caption's place; no text keys is the
    search at alpha = 0; the summary's gains are the paired per-seed differences."""
    import copy

    from siglip_adapter import report
    from siglip_adapter.inputs import Inputs
    from siglip_adapter.methods.adapter import TEXT_KEYS
    from siglip_adapter.methods.loop import method_rows, run
    from siglip_adapter.store import Features

    inp, cfg, labels = toy_run()
    cfg["methods"]["run"] = ["adapter"]

    def rows(keys="caption", inp=inp, alphas=None):
        variant = copy.deepcopy(cfg)
        variant["methods"]["adapter"]["keys"] = keys
        variant["methods"]["adapter"]["alpha"] = alphas or variant["methods"]["adapter"]["alpha"]
        return method_rows(inp, variant, ["adapter"])

    caption, named = rows(), rows("classname")
    as_captions = Inputs(inp.manifest, inp.image, Features(inp.image.ids, inp.class_text[labels], {}, {}), inp.class_text, 1.0, 0.0)
    pd.testing.assert_frame_equal(named, rows(inp=as_captions))
    none = rows("none")
    assert (none["alpha"] == 0).all()
    pd.testing.assert_frame_equal(none, rows(alphas=[0.0]))
    assert not named.equals(caption)  # the variants do differ here
    every = run(inp, cfg, ["adapter"]).table("text_keys")  # the adapter's variants, made beside its rows in the one loop
    assert every["keys"].tolist() == [k for k in TEXT_KEYS for _ in range(len(caption))]  # one variant after the other
    for keys, alone in (("caption", caption), ("classname", named), ("none", none)):  # each as if run with that parameter
        pd.testing.assert_frame_equal(every[every["keys"] == keys].drop(columns="keys").reset_index(drop=True), alone, check_exact=True)
    summary = report.tables.text_key_summary(every).set_index("shots")
    for k in cfg["shots"]:
        c, n, m = (every[(every["keys"] == v) & (every["shots"] == k)].set_index("seed")["accuracy"] for v in ("caption", "none", "classname"))
        assert summary.loc[k, "vs_none"] == pytest.approx((c - n).mean()) and summary.loc[k, "vs_classname"] == pytest.approx((c - m).mean())
        assert summary.loc[k, "vs_none_std"] == pytest.approx((c - n).std(ddof=1)) and summary.loc[k, "n_seeds"] == 3
    with pytest.raises(ValueError, match="keys"):
        rows("labels")
    text = report.tables.text_key_markdown(report.tables.text_key_summary(every))
    assert "**toy** (corrected): caption keys against no text keys" in text and text.count("| toy | corrected |") == 2


def test_the_sensitivity_grid_and_the_learning_curves_agree_with_the_rows():
    """The sensitivity grid's chosen cell is the adapter's row (same validation and test accuracy);
    a trained method's curve passes through its chosen (lr, epoch) at the row's validation accuracy."""
    from siglip_adapter.methods.loop import run

    inp, cfg, _ = toy_run()
    cfg["methods"]["run"] = ["adapter", "trainable"]
    cfg["methods"]["trainable"] = {"method": "ours", "lr": [0.001, 0.01], "weight_decay": 0.01, "epochs": 6, "eval_every": 2, "patience": None}
    result = run(inp, cfg)
    rows, sens = result.rows, result.table("sensitivity")
    k = max(cfg["shots"])
    assert len(sens) == cfg["n_seeds"] * len(cfg["methods"]["adapter"]["alpha"]) * len(cfg["methods"]["adapter"]["theta"])
    picked = sens[sens["chosen"]].set_index("seed")
    adapter = rows[(rows["method"] == "adapter") & (rows["shots"] == k)].set_index("seed")
    assert len(picked) == cfg["n_seeds"]
    pd.testing.assert_series_equal(picked["accuracy"], adapter["accuracy"], check_names=False, atol=1e-6)
    pd.testing.assert_series_equal(picked["val_accuracy"], adapter["val_accuracy"], check_names=False, atol=1e-6)
    assert (sens.groupby("seed")["val_accuracy"].max() <= adapter["val_accuracy"] + 1e-6).all()  # the search's best is the grid's best
    c = result.table("curves")
    assert set(c["method"]) == {"trainable"} and set(c["shots"]) == {k} and set(c["seed"]) == {cfg["seed_base"]}
    row = rows[(rows["method"] == "trainable") & (rows["shots"] == k) & (rows["seed"] == cfg["seed_base"])].iloc[0]
    at = c[(c["lr"] == row["lr"]) & (c["epoch"] == row["epoch"])]
    assert len(at) == 1 and at["val_accuracy"].iloc[0] == pytest.approx(row["val_accuracy"])
    assert c["val_accuracy"].max() == pytest.approx(row["val_accuracy"])
