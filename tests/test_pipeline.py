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


def _dvc_changed_deps(repo) -> dict:
    """{stage: changed deps} from ``dvc status``; missing outputs (no cache/ in a fresh clone) aside."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    changed = {}
    for stage, entries in json.loads(out.stdout or "{}").items():
        for entry in entries:
            deps = entry.get("changed deps", {}) if isinstance(entry, dict) else {}
            deps = {path: how for path, how in deps.items() if how != "deleted"}  # a cache not pulled is not a change
            if deps:
                changed[stage] = deps
    return changed


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory, root):
    """A copy of the tracked pipeline (code, params, notebooks, results, dvc.lock) in its own git repo."""
    import shutil
    import subprocess

    repo = tmp_path_factory.mktemp("dvcrepo")
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    if "dvc.lock" not in files:
        pytest.skip("no dvc.lock committed yet")
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def test_committed_results_match_the_code_and_params(dvc_copy):
    stale = _dvc_changed_deps(dvc_copy)
    assert stale == {}, f"dvc.lock is behind the code or params (run `make repro` and commit results/): {stale}"


def test_an_adapter_parameter_reruns_only_the_adapter_stage(dvc_copy):
    defaults = dvc_copy / "params" / "defaults.yaml"
    original = defaults.read_text()
    try:
        cfg = yaml.safe_load(original)
        defaults.write_text(original.replace(f"theta: {cfg['adapter']['theta']}".replace("'", ""), "theta: [1.0, 99.0]"))
        assert yaml.safe_load(defaults.read_text())["adapter"]["theta"] == [1.0, 99.0]
        changed = _dvc_changed_deps(dvc_copy)
        assert set(changed) == {f"adapter@{ds}" for ds in run_datasets(dvc_copy)}, changed
    finally:
        defaults.write_text(original)
