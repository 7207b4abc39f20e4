"""Kaggle kernels: valid metadata for every dataset x protocol of the run, the images input each
attaches, follow-up parts, the plan, and the pieces a kernel is made of (mounts under both of
Kaggle's layouts, the requirements it checks, the barrier timeout). The kernels themselves run on
a simulated Kaggle machine in tests/test_kaggle_machine.py."""

import json
import shutil

import jsonschema
import pytest

from siglip_adapter.cli import main
from siglip_adapter.runs import run_backbones, run_datasets, run_protocols
from siglip_adapter.kaggle import KERNEL_METADATA_SCHEMA, kernel_metadata, validate, write_kernel, write_kernels


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
        assert 'overlay = ""' in src and 'kit = "alice/siglip-adapter-kit"' in src and 'previous = ""' in src and 'install' not in src  # the template's default: pip
        seen.add((src.split('dataset = "')[1].split('"')[0], src.split('protocol = "')[1].split('"')[0]))
        if "digits" in folder.name:
            assert "alice/digits-png" in meta["dataset_sources"]
    assert seen == {(d, p) for d in run_datasets(root) for p in run_protocols(root)}


def test_ablation_kernels_one_per_dataset(tmp_path, root):
    assert main(["kaggle", "--user", "alice", "--kit-dataset", "alice/kit", "--out", str(tmp_path), "--ablation",
                 "--images", "digits=alice/digits-png"]) == 0
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


def test_a_kaggle_block_without_an_images_input_writes_nothing(tmp_path, capsys):
    """digits' dataset.kaggle names no dataset_source (the images are the user's upload): without
    --images the kernel would stop on Kaggle, so nothing is written and the message says what to give."""
    assert main(["kaggle", "--user", "alice", "--kit-dataset", "alice/kit", "--out", str(tmp_path / "k"), "--datasets", "digits"]) == 2
    assert "--images digits=OWNER/SLUG" in capsys.readouterr().err and not (tmp_path / "k").exists()


def test_the_images_input_defaults_to_the_documented_dataset_source(tmp_path):
    """dataset.kaggle.dataset_source (the schema accepts it) is the images input a kernel attaches."""
    (folder,) = write_kernels(tmp_path, "alice", "alice/kit", datasets=["eurosat"], protocols=["paper"])
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["alice/kit", "apollo2506/eurosat-dataset"]
    assert folder.name == "eurosat-siglip-b16-paper"  # a paper dataset's kernel runs its hub profile, no params edited


def test_part_two_mounts_part_one_and_continues_it(tmp_path):
    first = kernel_metadata("digits", "offline-conse-corrected", "alice", "alice/kit", "alice/digits-png")
    second = kernel_metadata("digits", "offline-conse-corrected", "alice", "alice/kit", "alice/digits-png", part=2)
    validate(second)
    assert first["kernel_sources"] == [] and second["kernel_sources"] == [first["id"]] and second["id"] != first["id"]
    folder = write_kernel(tmp_path, "digits", "corrected", "alice", "alice/kit", "alice/digits-png", backbone="offline-conse", part=3)
    src = "".join(next(c for c in json.loads(next(folder.glob("*.ipynb")).read_text())["cells"]
                       if "injected-parameters" in c["metadata"].get("tags", []))["source"])
    assert 'previous = "alice/siglip-adapter-digits-offline-conse-corrected-part-2"' in src and "part = 3" in src


def test_kaggle_inputs_are_found_under_either_mount_layout(tmp_path, monkeypatch):
    from siglip_adapter.paths import kaggle_input

    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        kaggle_input("alice/pets", "dataset", "dataset pets")
    assert str(tmp_path / "input" / "datasets" / "alice" / "pets") in str(e.value) and str(tmp_path / "input" / "pets") in str(e.value)
    (tmp_path / "input" / "pets").mkdir(parents=True)
    assert kaggle_input("alice/pets") == tmp_path / "input" / "pets"  # the older layout
    (tmp_path / "input" / "datasets" / "alice" / "pets").mkdir(parents=True)
    assert kaggle_input("alice/pets") == tmp_path / "input" / "datasets" / "alice" / "pets"  # the newer one first
    (tmp_path / "input" / "notebooks" / "alice" / "run-1").mkdir(parents=True)
    assert kaggle_input("alice/run-1", "kernel") == tmp_path / "input" / "notebooks" / "alice" / "run-1"


def test_a_dataset_whose_kaggle_input_is_not_mounted_is_an_error_not_the_hub_copy(tmp_path, monkeypatch):
    from siglip_adapter.config import load_config
    from siglip_adapter.sources import build_source, effective_dataset

    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.delenv("SIGLIP_ADAPTER_KAGGLE_IMAGES", raising=False)
    cfg = load_config("eurosat", protocol="paper")
    with pytest.raises(FileNotFoundError, match=r"dataset eurosat \(dataset.kaggle\): the Kaggle dataset apollo2506/eurosat-dataset is not "
                                                r"mounted \(tried .*input/datasets/apollo2506/eurosat-dataset, .*input/eurosat-dataset\)"):
        build_source(cfg)
    mount = tmp_path / "input" / "datasets" / "bob" / "my-eurosat"
    (mount / "EuroSAT").mkdir(parents=True)
    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_IMAGES", "bob/my-eurosat")  # the kernel's --images wins over dataset_source
    d = effective_dataset(cfg["dataset"])
    assert d["root"] == str(mount / "EuroSAT") and d["source"] == "folder" and "kaggle" not in d and "dataset_source" not in d
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path / "elsewhere"))
    assert effective_dataset(cfg["dataset"]) == cfg["dataset"]  # outside Kaggle the block is not read


def test_a_kaggle_root_outside_its_mounted_input_is_refused(root, tmp_path):
    import yaml

    from siglip_adapter.config import ConfigError, load_config

    shutil.copytree(root / "params", tmp_path / "params")
    ds = yaml.safe_load((root / "params" / "eurosat.yaml").read_text())
    ds["dataset"]["kaggle"]["root"] = "../../other/EuroSAT"
    (tmp_path / "params" / "eurosat.yaml").write_text(yaml.safe_dump(ds))
    with pytest.raises(ConfigError, match=r"params/eurosat.yaml: dataset.kaggle.root: .* outside the mounted Kaggle input"):
        load_config("eurosat", root=tmp_path)
    ds["dataset"]["kaggle"]["root"] = "EuroSAT"
    ds["dataset"]["dataset_source"] = "apollo2506/eurosat-dataset"
    (tmp_path / "params" / "eurosat.yaml").write_text(yaml.safe_dump(ds))
    with pytest.raises(ConfigError, match="dataset.kaggle.dataset_source"):
        load_config("eurosat", root=tmp_path)


def test_a_kernel_installs_the_offline_extra_only_for_the_offline_profile(root, tmp_path):
    from siglip_adapter.config import load_config
    from siglip_adapter.kernel import extras_for, install, requirements

    assert extras_for(load_config("digits")) == ["kernel", "offline"]
    assert extras_for(load_config("oxford_pets")) == ["kernel"]
    reqs = requirements(root, ["kernel", "offline"])
    assert any(r.startswith("papermill") for r in reqs) and any(r.startswith("efficientnet-lite-pytorch") for r in reqs)
    assert not any(r.startswith(("dvc", "jupyterlab")) for r in requirements(root, ["kernel"]))  # a kernel needs neither
    install(root, ["kernel", "offline"], "check")  # this Python has them all
    kit = tmp_path / "kit"
    kit.mkdir()
    text = (root / "pyproject.toml").read_text().replace('"papermill>=2.6",', '"papermill>=99",')
    (kit / "pyproject.toml").write_text(text)
    with pytest.raises(RuntimeError, match=r"papermill>=99 \(found "):
        install(kit, ["kernel"], "check")


def test_the_torch_floor_is_what_transformers_and_accelerate_ask_for(root):
    """pip never has to move a preinstalled torch that the kit's other requirements accept."""
    import tomllib
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    def floor(req):
        return max(Version(s.version) for s in req.specifier if s.operator in (">=", "=="))

    ours = next(Requirement(r.split("#")[0]) for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
                if r.startswith("torch"))
    theirs = [Requirement(r) for pkg in ("transformers", "accelerate") for r in requires(pkg) or []
              if r.startswith("torch") and Requirement(r).name == "torch" and Requirement(r).specifier]
    assert theirs and floor(ours) >= max(floor(r) for r in theirs)


def test_a_sharded_process_waits_hours_at_a_barrier(monkeypatch):
    import datetime

    import accelerate

    from siglip_adapter import shard

    seen = {}

    class State:
        def __init__(self, cpu=False, **kw):
            seen.update(kw)
            self.device, self.process_index, self.num_processes = type("D", (), {"type": "cpu"})(), 1, 2

    monkeypatch.setattr(accelerate, "PartialState", State)
    monkeypatch.setenv("WORLD_SIZE", "2")
    me = shard.current(6.0)
    assert (me.rank, me.world) == (1, 2) and seen["timeout"] == datetime.timedelta(hours=6)


def test_the_plan_counts_each_kernels_images_and_warns_before_one_that_would_not_fit(capsys):
    assert main(["kaggle", "--plan", "--datasets", "fashion_mnist", "oxford_pets", "--protocols", "corrected",
                 "--rates", "caption=0.5,embed=100", "--budget-hours", "2"]) == 0
    out, err = capsys.readouterr()
    fm = next(line for line in out.splitlines() if line.startswith("fashion_mnist-offline-conse-corrected"))
    pets = next(line for line in out.splitlines() if line.startswith("oxford_pets-siglip-b16-corrected"))
    assert fm.split()[1:3] == ["2030", "2030"] and "the split, drawn here" in fm  # what the committed run read
    assert pets.split()[1:3] == ["7349", "7349"] and "at most dataset.size" in pets
    assert "warning: oxford_pets-siglip-b16-corrected needs about 4.1 GPU hours, over the 2.0 h budget" in err
    assert "fashion_mnist" not in err  # 2,030 images at these rates: 1.1 h, it fits


@pytest.mark.parametrize("args, flag", [(["--kit-dataset", "kit"], "--kit-dataset: 'kit'"), (["--images", "digits=pngs"], "--images digits=: 'pngs'"),
                                        (["--user", "a b"], "--user: 'a b'")])
def test_a_malformed_kaggle_name_is_one_line_naming_its_flag(tmp_path, capsys, args, flag):
    base = {"--user": "alice", "--kit-dataset": "alice/kit", "--images": "digits=alice/digits-png"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["kaggle", "--out", str(tmp_path / "k"), "--datasets", "digits"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "k").exists()


def test_the_plan_takes_the_rates_bench_gpu_measured_and_says_so(tmp_path):
    from siglip_adapter.kaggle import measured_rates

    report = tmp_path / "gpu.txt"
    assert measured_rates(report)[0] is None
    report.write_text("# bench/gpu.py\nmachine: Tesla T4, compute capability 7.5, 15 GiB; x86_64\ndevice cuda, precision fp16 (auto)\n"
                      "encode_pixels batch 64: 310 images/s = 27.1 TFLOP/s, 0.41 of the matmul rate\n"
                      "encode_pixels batch 256: 335 images/s = 29.3 TFLOP/s, 0.44 of the matmul rate\n"
                      "SmolVLM-256M-sized captioner, batch 16, 64 image tokens per image, 48 new tokens each: 3.2 captions/s, 154 tokens/s\n"
                      "gpu ratio: 0.44\n")
    rates, where = measured_rates(report)
    assert rates == {"caption": 3.2, "embed": 335.0} and "bench/gpu.py on Tesla T4" in where
    report.write_text("SMOKE RUN: tiny sizes, figures are not measurements\n" + report.read_text())
    assert measured_rates(report)[0] is None  # a smoke run's figures are never used
