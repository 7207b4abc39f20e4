"""The Kaggle path end to end on a simulated Kaggle machine (``tests/kaggle_machine.py``): the
kernel notebooks that ``siglip-adapter kaggle`` generates, executed by papermill as Kaggle would
(no dry mode) with the kit and the images as read-only inputs under both mount layouts; then the
README's runbook on the user's side: the first page of the kernel's output, unpacked in a fresh
copy of the project, `dvc commit`, and the analysis stage tabulating the run without computing it
again. A kernel stopped by its time budget and continued by a second one ends with the same files
as one uninterrupted kernel."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from kaggle_machine import DIGITS, KIT, USER, new_machine, project_files, run_kernel

from siglip_adapter.kernel import STAGES

PAGE = 20  # `kaggle kernels output` lists a kernel's files 20 to a page


@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory):
    from kit_tools.digits import write_digits

    out = tmp_path_factory.mktemp("digits") / "digits"
    write_digits(out)
    return out


def members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as z:
        return {n: z.read(n) for n in z.namelist()}


def working_files(m) -> list[str]:
    return sorted(p.name for p in m.working.iterdir())


def executed_output(out: Path) -> str:
    """The text the executed kernel notebook printed."""
    nb = json.loads(next(out.glob("executed-*.ipynb")).read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_stage_kernel_runs_on_kaggle_and_its_output_lands_in_the_users_clone(tmp_path, root, digits_pngs):
    m = new_machine(tmp_path / "kaggle", root, digits=digits_pngs)
    inputs = m.snapshot()
    out = tmp_path / "kernel"
    state = run_kernel(m, out, "digits", images=DIGITS, backbone="offline-conse")
    run = "digits-offline-conse-corrected"
    assert state["complete"] and state["done"] == STAGES and state["remaining"] == [] and not state["stopped"]
    assert state["metadata"]["dataset_sources"] == [KIT, DIGITS] and state["metadata"]["machine_shape"] == "NvidiaTeslaT4"
    assert m.snapshot() == inputs  # nothing written into the read-only inputs
    # working/ holds the archive and its state file alone; the kit and its caches are in temp/
    assert working_files(m) == [f"siglip-adapter-{run}.state.json", f"siglip-adapter-{run}.zip"]
    assert sum(p.stat().st_size for p in m.working.iterdir()) < 64 * 2**20
    kit = m.root / "temp" / "siglip-adapter" / "kit"
    assert (kit / "cache" / "digits" / "features").is_dir() and not (kit / ".git").exists()
    printed = executed_output(out)
    assert "extras ['kernel', 'offline']" in printed and "profile offline" in printed
    files = members(m.working / state["archive"])
    assert len(files) == state["archive_files"]
    report = json.loads(files[f"results/runs/digits/offline-conse/corrected/data.json"])
    assert report["root"] == f"/kaggle/input/datasets/{DIGITS}/digits" and report["found"] == 1797  # read from the mounted images input

    # The user's side (README, Kaggle kernels, steps 4-5): the first page of the output, unpacked in a fresh copy.
    first_page = working_files(m)[:PAGE]
    assert state["archive"] in first_page
    user = tmp_path / "user"
    for rel in project_files(root):
        (user / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, user / rel)
    git = ["git", "-c", "user.email=kit@example.invalid", "-c", "user.name=kit"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run(git + cmd, cwd=user, check=True)
    with zipfile.ZipFile(m.working / state["archive"]) as z:
        z.extractall(user)
    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(user), "PYTHONPATH": str(user / "lib"), "TQDM_DISABLE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KAGGLE_KERNEL_RUN_TYPE", None)
    dvc = lambda *a: subprocess.run(["dvc", *a], cwd=user, env=env, capture_output=True, text=True)  # noqa: E731
    stages = [f"{s}@{run}" for s in ("captions", "embed", "zero_shot", "adapter", "trainable")]
    assert members(m.working / state["archive"])["results/runs/digits/images.json"]  # the images' fingerprint the stages depend on
    # the offline images, which the analysis shows beside their captions, and what the stages read of params/
    assert dvc("repro", "digits_data", "stage_params@digits").returncode == 0
    done = dvc("commit", "-f", *stages)
    assert done.returncode == 0, done.stderr
    status = dvc("status", *stages)
    assert "up to date" in status.stdout, status.stdout  # recorded: nothing of the run is stale
    analysis = dvc("repro", "--single-item", "analysis")
    assert analysis.returncode == 0, analysis.stdout + analysis.stderr
    assert "up to date" in dvc("status", *stages).stdout  # and nothing of the run was computed again
    table = pd.read_csv(user / "results" / "table1.csv")
    ours = table[(table["dataset"] == "digits") & (table["protocol"] == "corrected") & (table["method"] == "adapter")]
    rows = pd.read_csv(user / "results" / "runs" / "digits" / "offline-conse" / "corrected" / "04_adapter.csv")
    rows = rows[rows["method"] == "adapter"]
    k = rows["shots"].max()
    assert ours.loc[ours["shots"] == k, "mean"].item() == pytest.approx(rows.loc[rows["shots"] == k, "accuracy"].mean(), abs=1e-6)


def test_ablation_kernel_archives_its_rows(tmp_path, root):
    m = new_machine(tmp_path / "kaggle", root)
    inputs = m.snapshot()
    state = run_kernel(m, tmp_path / "kernel", "fashion_mnist", overlay="smoke", ablation=True, switches="cosine100_zero_shot")
    assert state["complete"] and state["done"] == ["ablation"] and state["run"] == "fashion_mnist-ablation"
    assert working_files(m) == ["siglip-adapter-fashion_mnist-ablation.state.json", "siglip-adapter-fashion_mnist-ablation.zip"]
    assert m.snapshot() == inputs
    rows = pd.read_csv(zipfile.ZipFile(m.working / state["archive"]).open("results/ablation/fashion_mnist.csv"))
    assert set(rows["variant"]) == {"corrected", "paper", "corrected+cosine100_zero_shot", "paper-cosine100_zero_shot"}


def hub_machine(folder: Path, root: Path, hub_project: Path):
    """A machine whose kit carries the tiny hub models and the shapes dataset (``tiny_models.hub_project``)."""
    trees = {rel: hub_project / rel for rel in ("build/tiny-models", "data/shapes")}
    return new_machine(folder, root, extra_files={"params/shapes.yaml": (hub_project / "params" / "shapes.yaml").read_text()},
                       extra_trees=trees)


def test_hub_kernel_on_tiny_models_shares_its_stages_between_two_processes(tmp_path, root, hub_project):
    m = hub_machine(tmp_path / "kaggle", root, hub_project)
    out = tmp_path / "kernel"
    state = run_kernel(m, out, "shapes", overlay="tiny_hub")
    assert state["complete"] and state["done"] == STAGES and state["run"] == "shapes-tiny-siglip-corrected"
    assert "extras ['kernel']" in executed_output(out)  # the hub profile needs no offline encoder
    files = members(m.working / state["archive"])
    caps = pd.read_parquet(zipfile.ZipFile(m.working / state["archive"]).open("cache/shapes/tiny-siglip/corrected/captions.parquet"))
    assert caps["captioner"].unique().tolist() == ["build/tiny-models/smolvlm"] and not caps["fp32_caption"].any()
    captions_nb = files["results/runs/shapes/tiny-siglip/corrected/notebooks/01_captions.ipynb"].decode()
    assert "process 2 of 2" in captions_nb  # tiny_hub's shards.processes: 2, as on Kaggle's two T4s
    assert "results/runs/shapes/tiny-siglip/corrected/05_trainable.csv" in files


def test_hub_ablation_kernel_shares_its_captions_and_features_between_two_processes(tmp_path, root, hub_project, monkeypatch):
    m = hub_machine(tmp_path / "kaggle", root, hub_project)
    out = tmp_path / "kernel"
    state = run_kernel(m, out, "shapes", overlay="tiny_hub", ablation=True, switches="author_captioner cosine100_zero_shot")
    assert state["complete"] and state["run"] == "shapes-ablation"
    assert "ablation shapes: 2 processes" in executed_output(out)  # launched like the stages (shards.processes: 2)
    two = pd.read_csv(zipfile.ZipFile(m.working / state["archive"]).open("results/ablation/shapes.csv"))
    assert {"paper-author_captioner", "corrected+author_captioner"} <= set(two["variant"])
    # the same ablation in one process, from nothing, gives the same rows
    from siglip_adapter.ablation import Ablation, write_rows

    kit = m.root / "temp" / "siglip-adapter" / "kit"
    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(kit))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    one = Ablation("shapes", "tiny_hub", out_root=tmp_path / "one").run(["author_captioner", "cosine100_zero_shot"])
    one = pd.read_csv(write_rows(one, tmp_path / "one.csv"))
    cols = ["variant", "method", "shots", "seed", "accuracy", "val_accuracy"]
    key = lambda f: f[cols].sort_values(cols[:4]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(two), key(one))


OVERLAY = """# the resumable kernel test: digits, small, in several caption parts and feature chunks
dataset: {per_class: 20}
n_seeds: 2
shots: [1, 2]
encoder: {chunk_size: 48}
captions: {chunk_size: 48}
methods: {run: [linear_probe, tip_adapter, adapter, trainable], linear_probe: {C: [0.1, 10.0]}, tip_adapter: {search_step: [2, 2]},
          adapter: {theta: [1.0, 5.0], beta: [0.0, 1.0]}, trainable: {lr: [0.001], epochs: 4}}
"""


def test_a_kernel_out_of_time_is_continued_by_a_second_one_to_the_same_files(tmp_path, root, digits_pngs):
    """Under Kaggle's older mount layout (input/<slug>) throughout."""
    kit = {"params/overlays/kaggle_resume.yaml": OVERLAY}
    first = new_machine(tmp_path / "k1", root, "old", kit, digits=digits_pngs)
    stopped = run_kernel(first, tmp_path / "out1", "digits", images=DIGITS, overlay="kaggle_resume", budget_hours=1e-9)
    assert not stopped["complete"] and stopped["remaining"] == STAGES and "time budget" in stopped["stopped"]
    assert "--part 2" in stopped["next"]
    partial = members(first.working / stopped["archive"])
    assert any("/features/" in n for n in partial)  # the chunks finished before the deadline are in the archive

    second = new_machine(tmp_path / "k2", root, "old", kit, digits=digits_pngs)
    second.attach_output(first, stopped["metadata"]["id"])
    resumed = run_kernel(second, tmp_path / "out2", "digits", images=DIGITS, overlay="kaggle_resume", part=2)
    assert resumed["metadata"]["kernel_sources"] == [stopped["metadata"]["id"]]
    assert resumed["complete"] and resumed["resumed_from"] == stopped["metadata"]["id"]

    once = new_machine(tmp_path / "k3", root, "old", kit, digits=digits_pngs)
    whole = run_kernel(once, tmp_path / "out3", "digits", images=DIGITS, overlay="kaggle_resume")
    a, b = members(second.working / resumed["archive"]), members(once.working / whole["archive"])
    assert set(partial) <= set(a)
    assert {n: a[n] for n in partial if "/notebooks/" not in n} == {n: partial[n] for n in partial if "/notebooks/" not in n}
    # every file but the executed notebooks (whose printed output differs) is byte-identical
    assert sorted(a) == sorted(b)
    differ = [n for n in a if a[n] != b[n]]
    assert all("/notebooks/" in n for n in differ), differ
