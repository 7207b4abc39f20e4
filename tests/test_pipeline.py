"""The DVC pipeline and the notebooks agree with params and with each other."""

import json

import pytest
import yaml

from siglip_adapter.config import load_config, read_yaml, run_datasets

NOTEBOOKS = ["01_captions", "02_embed", "03_zero_shot", "04_adapter", "05_trainable", "06_analysis"]


@pytest.fixture(scope="module")
def dvc(root):
    return yaml.safe_load((root / "dvc.yaml").read_text())


def test_every_stage_runs_its_notebook_and_tracks_existing_params(dvc, root):
    defaults = read_yaml(root / "params" / "defaults.yaml")
    stages = dvc["stages"]
    assert list(stages) == ["captions", "embed", "zero_shot", "adapter", "trainable", "analysis"]
    for (name, stage), nb in zip(stages.items(), NOTEBOOKS):
        body = stage.get("do", stage)
        assert f"notebooks/{nb}.ipynb" in body["cmd"] and f"notebooks/{nb}.ipynb" in body["deps"]
        for entry in body.get("params", []):
            for file, keys in entry.items():
                if file == "params/defaults.yaml":
                    assert set(keys) <= set(defaults), f"{name}: {set(keys) - set(defaults)} not in defaults.yaml"


def test_analysis_depends_on_every_dataset_it_tabulates(dvc, root):
    deps = dvc["stages"]["analysis"]["deps"]
    for ds in run_datasets(root):
        load_config(ds, root=root)
        for stage in ("03_zero_shot", "04_adapter", "05_trainable"):
            assert f"results/{ds}/{stage}.csv" in deps


def test_notebooks_have_a_parameters_cell_defaulting_to_smoke(root):
    for nb in NOTEBOOKS:
        cells = json.loads((root / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb
        assert 'overlay = "smoke"' in "".join(tagged[0]["source"]), nb
