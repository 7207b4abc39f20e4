"""The methods' interface (siglip_adapter.methods): each method against a direct reference
computation on small random inputs, hyper-parameters chosen on validation only, one loop."""

import copy
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import toy_run

from siglip_adapter.methods import registry
from siglip_adapter.methods.loop import Fitted, Labelled, Task, accuracy, method_rows, params_of

METHOD_PARAMS = {
    "run": ["zero_shot", "linear_probe", "tip_adapter", "tip_adapter_wide", "tip_adapter_f", "clip_adapter_val", "idea", "gda", "gda_lw", "adapter",
            "trainable"],
    "linear_probe": {"C": [0.01, 1.0, 100.0]},
    "tip_adapter": {"search_scale": [7.0, 300.0], "search_step": [4, 3], "init_beta": 1.0, "init_alpha": 1.17},
    "tip_adapter_wide": {"theta": [1.0, 5.0], "beta": [0.0, 1.0, 4.0]},
    "idea": {"alpha": 0.5, "theta": [1.0, 5.0], "beta": [0.0, 1.0, 4.0]},
    "gda": {"alpha": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]},
    "gda_lw": {"alpha": [0.0, 0.1, 1.0, 10.0, 100.0]},
    "tip_adapter_f": {"lr": 0.01, "eps": 0.0001, "epochs": 8, "batch_size": 256},
    "clip_adapter_val": {"ratio": [0.2, 0.6], "reduction": 4, "logit_scale": 100.0, "lr": [0.01], "epochs": 8, "patience": 3, "weight_decay": 0.01},
    "clip_adapter": {"ratio": 0.2, "reduction": 4, "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0005, "epochs": {1: 6, 2: 9}, "batch_size": 4,
                     "warmup_lr": 0.00001},
}


def toy():
    inp, cfg, _ = toy_run(n_classes=4, dim=16)
    cfg["methods"] = {**cfg["methods"], **copy.deepcopy(METHOD_PARAMS)}
    cfg["methods"]["trainable"] = {"method": "ours", "lr": [0.01], "weight_decay": 0.01, "epochs": 8, "eval_every": 2, "patience": 3}
    return inp, cfg


def task_of(inp, cfg, k=2, seed=1):
    return Task(Labelled(*inp.shots(k, seed)), Labelled(*inp.validation(cfg, k, seed)), inp.class_text, inp.scale, inp.bias, seed)


def eq6(x, image_keys, text_keys, labels, class_text, alpha, theta, beta):
    """Eq. 6 read literally, one test image and one shot at a time."""
    out = torch.zeros(len(x), class_text.shape[0])
    for m in range(len(x)):
        for n in range(class_text.shape[0]):
            few = sum(float(torch.exp(theta * ((1 - alpha) * x[m] @ image_keys[j] + alpha * x[m] @ text_keys[j] - 1)))
                      for j in range(len(labels)) if labels[j] == n)
            out[m, n] = beta * few + float(x[m] @ class_text[n])
    return out


@pytest.mark.parametrize("name,alpha", [("tip_adapter", 0.0), ("tip_adapter_wide", 0.0), ("idea", 0.5), ("adapter", None)])
def test_cache_methods_are_eq6_at_their_alpha(name, alpha):
    inp, cfg = toy()
    task = task_of(inp, cfg)
    params = cfg["methods"][name]
    fitted = registry.get(name).fit(task, params)
    c = fitted.chosen
    if alpha is not None:
        assert c["alpha"] == alpha
    x = inp.split("test")[0]
    s = task.shots
    torch.testing.assert_close(fitted.logits(x), eq6(x, s.images, s.captions, s.labels, task.class_text, c["alpha"], c["theta"], c["beta"]),
                               rtol=1e-5, atol=1e-5)
    # The choice is the grid's best on validation.
    if name == "tip_adapter":  # the authors' search_hp: n values from 0.1 up to the scale; the weight against 100 x cosine
        (t_end, b_end), (t_n, b_n) = params["search_scale"], params["search_step"]
        params = {"theta": [0.1 + i * (t_end - 0.1) / t_n for i in range(t_n)], "beta": [(0.1 + i * (b_end - 0.1) / b_n) / 100 for i in range(b_n)]}
        assert c["theta"] in params["theta"] and c["beta"] == pytest.approx(min(params["beta"], key=lambda v: abs(v - c["beta"])))
    grid = [(a, t, b) for a in ([alpha] if alpha is not None else params["alpha"]) for t in params["theta"] for b in params["beta"]]
    accs = [accuracy(eq6(task.val.images, s.images, s.captions, s.labels, task.class_text, *g), task.val.labels) for g in grid]
    assert fitted.val_accuracy == pytest.approx(max(accs))


def test_zero_shot_is_the_closest_class_prompt():
    inp, cfg = toy()
    task = task_of(inp, cfg)
    x = inp.split("test")[0]
    fitted = registry.get("zero_shot").fit(task, {})
    torch.testing.assert_close(fitted.logits(x), x @ inp.class_text.T)
    assert fitted.chosen == {}


@pytest.mark.parametrize("steps", [0, 3])
def test_linear_probe_is_sklearn_logistic_regression_at_the_chosen_c(steps):
    from sklearn.linear_model import LogisticRegression

    inp, cfg = toy()
    task = task_of(inp, cfg, k=2)
    grid = cfg["methods"]["linear_probe"]["C"]
    fitted = registry.get("linear_probe").fit(task, {**cfg["methods"]["linear_probe"], "steps": steps})
    x = inp.split("test")[0]
    shots = task.shots.images.double().numpy(), task.shots.labels.numpy()
    ref = LogisticRegression(C=fitted.chosen["C"], max_iter=1000).fit(*shots)
    np.testing.assert_allclose(fitted.logits(x).numpy(), ref.decision_function(x.double().numpy()), rtol=1e-4, atol=1e-4)
    val_of = lambda c: LogisticRegression(C=c, max_iter=1000).fit(*shots).score(task.val.images.double().numpy(), task.val.labels.numpy())  # noqa: E731
    val = {c: val_of(c) for c in grid}
    if steps == 0:  # the grid alone: its first best
        assert fitted.chosen["C"] == next(c for c in grid if val[c] == max(val.values())) and fitted.candidates == len(grid)
    else:  # the halving search around the grid's best: C within one decade of it, the model at the last step's C
        first = next(c for c in grid if val[c] == max(val.values()))
        assert 0.1 * first <= fitted.chosen["C"] <= 10 * first and fitted.candidates > len(grid)
    assert fitted.val_accuracy == pytest.approx(val_of(fitted.chosen["C"]))


def test_linear_probe_halving_search_walks_to_the_peak_and_keeps_the_left_end_on_ties():
    from siglip_adapter.methods.linear_probe import refine

    peaked = lambda c: -abs(math.log10(c) - 2.3)  # noqa: E731  (validation accuracy peaking at C = 10 ** 2.3)
    assert abs(math.log10(refine(100.0, 8, peaked)) - 2.3) < 2 / 2**7  # the range halves each step from 2 decades
    assert refine(100.0, 0, peaked) == 100.0
    assert refine(100.0, 8, lambda c: 0.5) == pytest.approx(10.0)  # every tie keeps the left end: c / 10


def authors_precision(centred):
    """GDA's paper, read literally: D (S_n + tr(S) I)^+ with S the covariance of the centred shots, S_n its scatter."""
    n, d = centred.shape
    s = np.cov(centred.T)
    return d * np.linalg.pinv((n - 1) * s + np.trace(s) * np.eye(d))


def ledoit_wolf_precision(centred):
    from sklearn.covariance import LedoitWolf

    return LedoitWolf(assume_centered=True).fit(centred).precision_


@pytest.mark.parametrize("name,precision_of", [("gda", authors_precision), ("gda_lw", ledoit_wolf_precision)])
def test_gda_is_shared_covariance_discriminant_analysis_fused_with_zero_shot(name, precision_of):
    inp, cfg = toy()
    task = task_of(inp, cfg, k=2, seed=3)
    fitted = registry.get(name).fit(task, cfg["methods"][name])
    assert fitted.chosen["alpha"] > 0  # validation picked the shots' classifier here, so it is what is compared
    x, s = inp.split("test")[0].double().numpy(), task.shots
    xs, ys = s.images.double().numpy(), s.labels.numpy()
    means = np.stack([xs[ys == k].mean(0) for k in range(4)])
    precision = precision_of(xs - means[ys])
    # The Gaussian log-density with a shared covariance, up to what every class shares.
    direct = np.stack([-0.5 * np.einsum("md,de,me->m", x - mu, precision, x - mu) + 0.5 * np.einsum("md,de,me->m", x, precision, x)
                       for mu in means], 1)
    # alpha weighs it against 100 x cosine zero-shot logits (the authors' unit); these logits are 1 x cosine
    expected = x @ inp.class_text.double().numpy().T + fitted.chosen["alpha"] / 100 * direct
    np.testing.assert_allclose(fitted.logits(torch.from_numpy(x).float()).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_one_loop_runs_every_named_method_and_test_labels_choose_nothing():
    inp, cfg = toy()
    rows = method_rows(inp, cfg)
    per_cell = {m: len(cfg["shots"]) * cfg["n_seeds"] for m in METHOD_PARAMS["run"]}
    assert rows.groupby("method").size().to_dict() == {**per_cell, "zero_shot": 1}  # zero-shot: one cell, K = 0 and no seed
    chosen = {"linear_probe": ["C"], "tip_adapter": ["theta", "beta"], "tip_adapter_wide": ["theta", "beta"], "idea": ["alpha", "theta", "beta"],
              "gda": ["alpha"], "gda_lw": ["alpha"],
              "adapter": ["alpha", "theta", "beta"], "tip_adapter_f": ["theta", "beta", "epoch"],
              "clip_adapter_val": ["ratio", "lr", "epoch"], "trainable": ["alpha", "theta", "beta", "lr", "epoch"]}
    for m, cols in chosen.items():
        assert rows.loc[rows["method"] == m, cols].notna().all().all(), m
    assert (rows["selected_on"] == rows["method"].map({"zero_shot": "none"}).fillna("val")).all() and rows["accuracy"].between(0, 1).all()
    # Poisoned test labels change the test accuracies, never a chosen value.
    poisoned = copy.deepcopy(inp)
    test = poisoned.manifest["split"] == "test"
    poisoned.manifest.loc[test, "label"] = (poisoned.manifest.loc[test, "label"] + 1) % 4
    again = method_rows(poisoned, cfg)
    hyper = ["C", "alpha", "theta", "beta", "ratio", "lr", "epoch", "val_accuracy"]
    pd.testing.assert_frame_equal(rows[hyper], again[hyper])
    assert not rows["accuracy"].equals(again["accuracy"])
    with pytest.raises(ValueError, match="unknown method"):
        registry.get("prompt_soup")


def test_tip_adapter_f_learns_its_keys_and_scores_from_its_saved_tensors():
    """Validation = the shots themselves: the trained keys move, fit the shots at the initial
    values beyond the untrained cache, and the method's score from its state (what a card stores)
    is the cache on the trained keys with the searched values."""
    from siglip_adapter.methods.cache import adapter_logits
    from siglip_adapter.methods.tip_adapter_f import tip_logits

    inp, cfg = toy()
    shots = Labelled(*inp.shots(4, 1))
    task = Task(shots, shots, inp.class_text, 1.0, 0.0, 1)
    params = params_of(cfg, "tip_adapter_f")
    params = {**params, "epochs": 40, "lr": 0.01, "start": {**params["start"], "init_alpha": 10.0}}
    fitted = registry.get("tip_adapter_f").fit(task, params)
    keys = fitted.state["image_keys"]
    assert fitted.chosen["epoch"] > 0 and fitted.chosen["alpha"] == 0.0 and not torch.equal(keys, shots.images)
    values = torch.nn.functional.one_hot(shots.labels, 4).float()
    start, trained = (accuracy(tip_logits(shots.images, k, values, inp.class_text, 1.0, 10.0), shots.labels) for k in (shots.images, keys))
    assert trained > start
    x = inp.split("test")[0]
    c = fitted.chosen
    torch.testing.assert_close(fitted.logits(x), adapter_logits(x, keys, keys, shots.labels, inp.class_text, 0.0, c["theta"], c["beta"]))


def test_clip_adapter_learns_the_shots_and_scores_from_its_saved_tensors():
    """Validation = the shots themselves: the method's score from its state equals the trained module's logits."""
    from siglip_adapter.methods.clip_adapter import ClipAdapter

    inp, cfg = toy()
    shots = Labelled(*inp.shots(4, 1))
    task = Task(shots, shots, inp.class_text, 1.0, 0.0, 1)
    fitted = registry.get("clip_adapter_val").fit(task, {**params_of(cfg, "clip_adapter_val"), "epochs": 40, "patience": None})
    assert fitted.chosen["epoch"] > 0
    x = inp.split("test")[0]
    model = ClipAdapter(inp.class_text, fitted.chosen["ratio"])
    with torch.no_grad():
        model.down.weight.copy_(fitted.state["down"])
        model.up.weight.copy_(fitted.state["up"])
        torch.testing.assert_close(registry.get("clip_adapter_val").score(fitted.state, fitted.chosen, x), model(x))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_clip_adapter_trains_its_configs_epochs_in_batches_and_keeps_the_last(k):
    """The authors' CLIP-Adapter: the epochs of the largest listed K at or below the task's, every one
    trained (no validation check, nothing chosen), the scale CLIP's, the saved tensors scoring as the module."""
    from siglip_adapter.methods.clap import CLIP_LOGIT_SCALE
    from siglip_adapter.methods.clip_adapter import ClipAdapter

    inp, cfg = toy()
    task = task_of(inp, cfg, k=k)
    params = params_of(cfg, "clip_adapter")
    fitted = registry.get("clip_adapter").fit(task, params)
    epochs = {1: 6, 2: 9, 4: 9}[k]
    assert fitted.chosen == {"ratio": 0.2, "epoch": epochs} and [h["epoch"] for h in fitted.history] == list(range(1, epochs + 1))
    assert fitted.selected_on == "none" and fitted.history[0]["lr"] == params["warmup_lr"] and fitted.history[1]["lr"] == params["lr"]
    x = inp.split("test")[0]
    torch.manual_seed(task.seed)
    model = ClipAdapter(task.class_text, 0.2, 4, CLIP_LOGIT_SCALE)  # its start: the seeded initialisation
    assert not torch.equal(model.down.weight, fitted.state["down"])
    with torch.no_grad():
        model.down.weight.copy_(fitted.state["down"])
        model.up.weight.copy_(fitted.state["up"])
        torch.testing.assert_close(fitted.logits(x), model(x))


def test_a_method_that_starts_from_another_reuses_its_fit_on_the_same_task():
    """The trainable adapter starts from the training-free adapter's choice on the same task, and
    Tip-Adapter-F from Tip-Adapter's: fitted once per task, the start's params under ``start``."""
    from siglip_adapter.methods import loop

    inp, cfg = toy()
    assert params_of(cfg, "trainable")["start"] == cfg["methods"]["adapter"] and params_of(cfg, "tip_adapter_f")["start"] == cfg["methods"]["tip_adapter"]
    task = task_of(inp, cfg, k=2)
    calls = []
    real = registry.METHODS["adapter"]
    registry.METHODS["adapter"] = dataclasses.replace(real, fit=lambda t, p: calls.append(1) or real.fit(t, p))
    try:
        first = task.fitted("adapter", params_of(cfg, "adapter"))
        trained = task.fitted("trainable", params_of(cfg, "trainable"))
    finally:
        registry.METHODS["adapter"] = real
    assert len(calls) == 1
    assert {k: trained.chosen[k] for k in ("alpha", "theta", "beta")} == first.chosen
    assert loop.names(cfg, kind="trained") == ["tip_adapter_f", "clip_adapter_val", "trainable"]
    assert loop.names(cfg, kind="training-free") == ["linear_probe", "tip_adapter", "tip_adapter_wide", "idea", "gda", "gda_lw", "adapter"]
    assert loop.names(cfg, kind="zero-shot") == ["zero_shot", "zero_shot_captions"]  # every one, whatever methods.run says


def test_the_trainable_method_is_the_trainable_adapter_and_scores_from_its_saved_tensors():
    from siglip_adapter.methods.trainable import fit_trainable
    from siglip_adapter.methods.training import Schedule

    inp, cfg = toy()
    task = task_of(inp, cfg, k=2, seed=2)
    fitted = registry.get("trainable").fit(task, params_of(cfg, "trainable"))
    c, t, s = fitted.chosen, cfg["methods"]["trainable"], task.shots
    ref = fit_trainable(s, task.val, task.class_text, c, Schedule(t["lr"], t["epochs"], t["weight_decay"], t["eval_every"], t["patience"]), seed=2)
    x = inp.split("test")[0]
    with torch.no_grad():
        torch.testing.assert_close(registry.get("trainable").score(fitted.state, c, x), ref.model.eval()(x))
    assert (c["lr"], c["epoch"], fitted.val_accuracy) == (ref.lr, ref.epoch, ref.val_accuracy)
    with pytest.raises(ValueError, match="chooses on the test split, which this task does not carry"):
        registry.get("trainable").fit(task, {**params_of(cfg, "trainable"), "method": "authors"})


_KILLED_METHODS = """
import sys
sys.path.insert(0, {tests!r})
from helpers import counted_method_run
counted_method_run(sys.argv[1], {fits!r}, pause=0.3)
"""


def test_a_killed_method_run_resumes_with_nothing_lost_or_redone(tmp_path):
    """A real ``kill -9`` in the K x seed loop: the rerun fits only the cells the dead run had not
    finished, and its rows and learning curves equal those of a run never interrupted."""
    from pathlib import Path

    from helpers import counted_method_run, kill_midway

    from siglip_adapter.methods.loop import CELL_COLUMNS
    from siglip_adapter.store import read_parts

    clean, clean_curves = counted_method_run(pause=0.0)
    store, fits = tmp_path / "cells", tmp_path / "fits.txt"
    script = tmp_path / "run.py"
    script.write_text(_KILLED_METHODS.format(tests=str(Path(__file__).parent), fits=str(fits)))
    parts = lambda: list(store.glob("*/cell-*.parquet"))  # noqa: E731
    kill_midway(script, store, lambda: len(parts()) >= 3)
    finished = {tuple(map(int, p.stem.split("-")[1:])) for p in parts()}
    assert 3 <= len(finished) < 10, "the run was not killed mid-way"
    fits.write_text("")
    rows, curves = counted_method_run(store, fits, pause=0.0)
    refit = [tuple(map(int, line.split())) for line in fits.read_text().splitlines()]
    assert not finished & set(refit) and len(refit) == 10 - len(finished)  # nothing finished is fitted again
    pd.testing.assert_frame_equal(rows, clean)  # nothing lost, nothing twice, the same numbers
    pd.testing.assert_frame_equal(curves, clean_curves)
    assert len(read_parts(store.glob("*").__next__(), CELL_COLUMNS, "cells")) == 10  # every cell once on disk


def test_a_cell_edited_on_disk_is_fitted_again(tmp_path):
    """A finished cell whose rows were changed on disk (a better accuracy typed in) is refused with
    a warning and fitted again; the others are read back."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from helpers import counted_method_run

    store, fits = tmp_path / "cells", tmp_path / "fits.txt"
    first, _ = counted_method_run(store, fits, n_seeds=2, pause=0.0)
    part = next(store.glob("*/cell-2-1.parquet"))
    table = pq.read_table(part)
    frame = table.to_pandas()
    frame["row"] = [json.dumps({**json.loads(r), "accuracy": 1.0}) for r in frame["row"]]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata), part)
    fits.write_text("")
    with pytest.warns(UserWarning, match="do not match the SHA-256"):
        again, _ = counted_method_run(store, fits, n_seeds=2, pause=0.0)
    assert fits.read_text().splitlines() == ["2 1"]  # only the edited cell
    pd.testing.assert_frame_equal(again, first)


def test_a_methods_stage_past_its_deadline_stops_after_a_cell_and_resumes_from_it(tmp_path, monkeypatch):
    """A Kaggle kernel's time budget (siglip_adapter.budget): one cell per call is fitted, then the
    stage stops with the finished cells stored; the rerun fits only the others and gives the same rows."""
    from helpers import counted_method_run

    from siglip_adapter import budget

    fits = tmp_path / "fits.txt"
    monkeypatch.setenv(budget.DEADLINE_ENV, "1")  # long past
    with pytest.raises(budget.OutOfTime):
        counted_method_run(tmp_path / "cells", fits, n_seeds=3, pause=0.0)
    assert len(fits.read_text().splitlines()) == 1
    monkeypatch.delenv(budget.DEADLINE_ENV)
    rows, _ = counted_method_run(tmp_path / "cells", fits, n_seeds=3, pause=0.0)
    clean, _ = counted_method_run(None, None, n_seeds=3, pause=0.0)
    fitted = fits.read_text().splitlines()
    assert len(fitted) == len(set(fitted)) == len(rows) // 3  # each cell fitted once over both calls
    pd.testing.assert_frame_equal(rows, clean)


def test_the_registry_keeps_the_order_labels_and_paper_methods_of_the_committed_tables():
    """Each module declares its label, kind and place (``methods.registry``); together they give
    the order, labels and paper methods that the committed tables and figures were made with."""
    kit = [m for m in registry.ordered() if registry.METHODS[m].in_kit]  # not a test's own (helpers.counted_method_run)
    assert kit == ["zero_shot", "zero_shot_captions", "linear_probe", "lp_pp", "zs_lp", "clap", "taskres", "tip_adapter", "tip_adapter_wide", "tip_adapter_f",
                   "clip_adapter", "clip_adapter_val", "gda", "gda_lw", "proker", "ape", "ape_t", "idea", "coop", "coop_val", "adapter", "trainable"]
    assert [registry.label(m) for m in kit] == [
        "Zero-shot", "Zero-shot + captions", "Linear probe", "LP++", "ZS-LP", "CLAP", "TaskRes", "Tip-Adapter", "Tip-Adapter (wide grid)", "Tip-Adapter-F", "CLIP-Adapter",
        "CLIP-Adapter (val-tuned)", "GDA", "GDA (Ledoit-Wolf)", "ProKeR", "APE", "APE-T", "IDEA (training-free)", "CoOp", "CoOp (val-tuned, budgeted)", "SigLIP-Adapter (training-free)", "SigLIP-Adapter (trainable)"]
    assert registry.paper_methods() == ["zero_shot_captions", "adapter", "trainable"]
    assert [m for m in kit if not registry.few_shot(m)] == ["zero_shot", "zero_shot_captions"]
    assert registry.ordered(["adapter", "an_old_row", "zero_shot", "a_method_no_module_declares"]) == [
        "zero_shot", "adapter", "a_method_no_module_declares", "an_old_row"]  # unknown names last, by name
    with pytest.raises(ValueError, match="declared twice"):
        registry.method("gda", params=registry.MethodParams, score=lambda s, c, x: x)(lambda task, params: None)
