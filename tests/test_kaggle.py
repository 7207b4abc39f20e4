"""Kaggle kernels: valid metadata for every dataset x protocol of the run, and a generated notebook
that runs (dry mode, offline profile) from the stage notebooks to the zipped outputs."""

import json
import shutil
import zipfile

import jsonschema
import pytest

from siglip_adapter.cli import main
from siglip_adapter.config import run_backbones, run_datasets, run_protocols
from siglip_adapter.kaggle import KERNEL_METADATA_SCHEMA, kernel_metadata, validate, write_kernel


def test_cli_writes_a_valid_kernel_for_every_run(tmp_path, root, capsys):
    assert main(["kaggle", "--user", "alice", "--kit-dataset", "alice/siglip-adapter-kit", "--out", str(tmp_path),
                 "--images", "digits=alice/digits-png"]) == 0
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == len(run_datasets(root)) * len(run_backbones(root)) * len(run_protocols(root))
    seen = set()
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        jsonschema.validate(meta, KERNEL_METADATA_SCHEMA)
        validate(meta)
        assert meta["enable_gpu"] is True and meta["enable_internet"] is True and meta["kernel_type"] == "notebook"
        assert meta["machine_shape"] == "NvidiaTeslaT4"  # two T4s, not the default single P100
        assert meta["dataset_sources"][0] == "alice/siglip-adapter-kit"
        nb = json.loads((folder / meta["code_file"]).read_text())
        injected = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
        src = "".join(injected["source"])
        assert "dry_run = False" in src and 'overlay = ""' in src and 'kit_input = "/kaggle/input/siglip-adapter-kit"' in src
        seen.add((src.split('dataset = "')[1].split('"')[0], src.split('protocol = "')[1].split('"')[0]))
        if "digits" in folder.name:
            assert "alice/digits-png" in meta["dataset_sources"]
    assert seen == {(d, p) for d in run_datasets(root) for p in run_protocols(root)}


def test_ablation_kernels_one_per_dataset(tmp_path, root):
    assert main(["kaggle", "--user", "alice", "--kit-dataset", "alice/kit", "--out", str(tmp_path), "--ablation"]) == 0
    folders = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert len(folders) == len(run_datasets(root)) * (len(run_backbones(root)) * len(run_protocols(root)) + 1)
    for ds in run_datasets(root):
        folder = tmp_path / f"{ds.replace('_', '-')}-ablation"
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        validate(meta)
        assert meta["title"] == f"SigLIP-Adapter {ds} ablation"
        src = "".join(next(c for c in json.loads((folder / meta["code_file"]).read_text())["cells"]
                           if "injected-parameters" in c["metadata"].get("tags", []))["source"])
        assert "ablation = True" in src and 'switches = ""' in src


@pytest.mark.parametrize("bad", [{"title": None}, {"id": "no-owner"}, {"language": "cobol"}, {"enable_gpu": "yes"},
                                 {"dataset_sources": ["not a slug"]}, {"surprise": 1}, {"id": "alice/another-title"}])
def test_the_schema_refuses_what_the_cli_does_not_document(bad):
    meta = kernel_metadata("fashion_mnist", "corrected", "alice", "alice/kit", None)
    meta = {k: v for k, v in {**meta, **bad}.items() if v is not None}
    with pytest.raises(jsonschema.ValidationError):
        validate(meta)


def test_unknown_protocol_writes_nothing(tmp_path):
    assert main(["kaggle", "--user", "alice", "--kit-dataset", "alice/kit", "--out", str(tmp_path / "k"), "--protocols", "papr"]) == 2
    assert not (tmp_path / "k").exists()


def test_a_generated_notebook_runs_in_dry_mode(tmp_path, root, monkeypatch):
    import papermill

    proj = tmp_path / "kit"
    for folder in ("params", "notebooks"):
        shutil.copytree(root / folder, proj / folder)
    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(proj))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    folder = write_kernel(tmp_path / "kaggle", "fashion_mnist", "corrected", "alice", "alice/kit", dry_run=True, overlay="smoke")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    papermill.execute_notebook(str(folder / meta["code_file"]), str(tmp_path / "executed.ipynb"), cwd=str(proj),
                               kernel_name="python3", progress_bar=False)
    archive = proj / "build" / "kaggle-output" / "siglip-adapter-fashion_mnist-offline-conse-corrected.zip"
    names = set(zipfile.ZipFile(archive).namelist())
    for stage in ("03_zero_shot", "04_adapter", "05_trainable"):
        assert f"results/runs/fashion_mnist/offline-conse/corrected/{stage}.csv" in names
    assert {"cache/fashion_mnist/offline-conse/corrected/features.json", "cache/fashion_mnist/offline-conse/corrected/captions.parquet"} <= names


def test_an_ablation_kernel_runs_in_dry_mode(tmp_path, root, monkeypatch):
    import papermill

    proj = tmp_path / "kit"
    shutil.copytree(root / "params", proj / "params")
    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(proj))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    folder = write_kernel(tmp_path / "kaggle", "fashion_mnist", "corrected", "alice", "alice/kit", dry_run=True, overlay="smoke",
                          ablation=True, switches="cosine100_zero_shot")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    papermill.execute_notebook(str(folder / meta["code_file"]), str(tmp_path / "executed.ipynb"), cwd=str(proj),
                               kernel_name="python3", progress_bar=False)
    archive = zipfile.ZipFile(proj / "build" / "kaggle-output" / "siglip-adapter-fashion_mnist-ablation.zip")
    assert "results/ablation/fashion_mnist.csv" in archive.namelist()
    import pandas as pd

    rows = pd.read_csv(archive.open("results/ablation/fashion_mnist.csv"))
    assert set(rows["variant"]) == {"corrected", "paper", "corrected+cosine100_zero_shot", "paper-cosine100_zero_shot"}
