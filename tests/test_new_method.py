"""README, "Add a method": one module plus its entry in the params file, nothing else edited.

The method here lives in a module written to a temporary folder (a user's own, outside the kit),
named in ``methods.modules``; it reaches the parameter checks, the K x seed loop, the stage
metrics, Table I's shots sweep, the ranking, the accuracy figure and a saved card.
"""

import json
import shutil
import sys
import textwrap

import pandas as pd
import pytest
import torch
import yaml
from helpers import toy_run

from siglip_adapter import report
from siglip_adapter.cards import best_row, load_card, save_card
from siglip_adapter.config import ConfigError, load_config
from siglip_adapter.methods import loop, registry

MODULE = '''
"""Nearest class mean: the shots' class means as a classifier, mixed with zero-shot at a weight
chosen on validation."""

import torch

from siglip_adapter.methods.loop import Fitted, Task, best, zero_shot_of, zero_shot_state
from siglip_adapter.methods.registry import MethodParams, method
from siglip_adapter.schema import UnitGrid


class Params(MethodParams):
    weight: UnitGrid = [0.0, 0.5, 1.0]  # the class means' weight against zero-shot


def score(state, chosen, images):
    w = chosen["weight"]
    return (1 - w) * zero_shot_of(state, images) + w * images @ state["means"].T


@method("class_means", params=Params, score=score, label="Class means (plug-in)", kind="training-free", order=95)
def fit(task: Task, params: dict) -> Fitted:
    s = task.shots
    means = torch.stack([s.images[s.labels == c].mean(0) for c in range(task.n_classes)])
    state = {**zero_shot_state(task), "means": torch.nn.functional.normalize(means, dim=-1)}
    acc = lambda w: Fitted("class_means", state, {"weight": w}).accuracy(task.val)
    weight, val = best(params["weight"], acc)
    return Fitted("class_means", state, {"weight": weight}, val)
'''

OVERLAY = {"methods": {"modules": ["plug_class_means"], "run": ["tip_adapter", "adapter", "class_means"],
                       "class_means": {"weight": [0.0, 0.25, 0.5, 1.0]}}}


@pytest.fixture
def plugged(tmp_path, root, monkeypatch):
    """A project copy whose params name the temp module, and the module on sys.path."""
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "plug_class_means.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "plug"))
    shutil.copytree(root / "params", tmp_path / "root" / "params")
    (tmp_path / "root" / "params" / "overlays" / "plug.yaml").write_text(yaml.safe_dump(OVERLAY))
    yield tmp_path
    registry.METHODS.pop("class_means", None)
    sys.modules.pop("plug_class_means", None)


def test_a_method_from_a_module_outside_the_kit_reaches_table1_the_ranking_the_figure_and_a_card(plugged, root):
    cfg = load_config("fashion_mnist", "plug", root=plugged / "root")  # the module's own Params check its section
    assert cfg["methods"]["class_means"] == {"weight": [0.0, 0.25, 0.5, 1.0]} and loop.names(cfg, kind="training-free")[-1] == "class_means"

    inp, run, _ = toy_run()
    run["methods"] = {**run["methods"], **{k: cfg["methods"][k] for k in ("run", "class_means", "tip_adapter", "zero_shot_captions")}}
    rows = pd.concat([loop.method_rows(inp, run, loop.names(run, kind=kind)) for kind in ("zero-shot", "training-free")], ignore_index=True)
    ours = rows[rows["method"] == "class_means"]
    assert len(ours) == len(run["shots"]) * run["n_seeds"] and set(ours["weight"]) <= {0.0, 0.25, 0.5, 1.0}
    assert (ours["selected_on"] == "val").all()

    summary = report.stage.write_stage(rows, plugged / "04_adapter.csv", plugged / "04_adapter.json")
    assert list(dict.fromkeys(summary["method"])) == ["zero_shot", "zero_shot_captions", "tip_adapter", "adapter", "class_means"]  # its place
    table = report.tables.table1(rows, report.tables.published_rows(root / "params" / "paper_table1.yaml", []))
    text = report.tables.table1_markdown(table, shots=1)
    sweep = text[text.index("## Every method against shots"):]
    assert "| toy | toy | corrected | Class means (plug-in) |" in sweep
    assert "Class means (plug-in)" in report.tables.ranking_markdown(report.tables.ranking(table))
    fig = report.figures.plot_shots(rows)
    assert "Class means (plug-in)" in [t.get_text() for t in fig.legends[0].get_texts()]

    k = max(run["shots"])
    assert best_row(rows, k, ["class_means"])["method"] == "class_means"  # the cards' pick can take it
    task = loop.task_for(inp, run, k, run["seed_base"])
    fitted = task.fitted("class_means", loop.params_of(run, "class_means"))
    card = {"format": 1, "method": "class_means", "backbone": {"encoder": "toy"}, "encoder": {}, "images": {"invert": False},
            "dataset": "toy", "protocol": "corrected", "classnames": list("abcd"), "prompts": list("abcd"), "shots": k, "seed": 1,
            "hyper_parameters": fitted.chosen, "val_accuracy": fitted.val_accuracy, "test_accuracy": 0.0}
    path = save_card(fitted, card, plugged / "cards" / "class_means.json")
    assert json.loads(path.read_text())["module"] == "plug_class_means"  # predict imports it where it is on the path
    registry.METHODS.pop("class_means")
    sys.modules.pop("plug_class_means")
    _, loaded = load_card(path)
    x = inp.split("test")[0]
    assert torch.equal(loaded.logits(x), fitted.logits(x))

    kit = [*(root / "lib").rglob("*.py"), *(root / "params").rglob("*.yaml"), root / "dvc.yaml"]
    assert not [p for p in kit if "class_means" in p.read_text()]  # nothing of the kit names it


def test_a_mistake_in_the_new_methods_parameters_names_the_file_and_the_key(plugged):
    overlay = plugged / "root" / "params" / "overlays" / "plug.yaml"
    bad = yaml.safe_load(overlay.read_text())
    bad["methods"]["class_means"] = {"wieght": [0.5]}
    overlay.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"params/overlays/plug.yaml: unknown parameter 'methods.class_means.wieght' .*"
                                          r"plug_class_means.py.*did you mean 'weight'"):
        load_config("fashion_mnist", "plug", root=plugged / "root")
    bad["methods"]["class_means"] = {"weight": [1.5]}
    overlay.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"params/overlays/plug.yaml: methods.class_means.weight.0: .*less than or equal to 1"):
        load_config("fashion_mnist", "plug", root=plugged / "root")


def test_a_method_outside_the_kit_is_only_a_choice_where_the_params_name_its_module(plugged):
    """Another run's params, without ``methods.modules``, cannot run it (the registry is per process,
    the schema per run)."""
    load_config("fashion_mnist", "plug", root=plugged / "root")  # imports it in this process
    overlay = plugged / "root" / "params" / "overlays" / "other.yaml"
    overlay.write_text(yaml.safe_dump({"methods": {"run": ["adapter", "class_means"]}}))
    with pytest.raises(ConfigError, match=r"params/overlays/other.yaml: methods.run.1: .*\(got 'class_means'\)"):
        load_config("fashion_mnist", "other", root=plugged / "root")
