"""The DVC pipeline and the notebooks agree with params, with the code they run and with each other."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from siglip_adapter.config import read_yaml
from siglip_adapter.runs import run_backbones, run_datasets, run_protocols

NOTEBOOKS = ["01_captions", "02_embed", "03_zero_shot", "04_adapter", "05_trainable", "06_analysis"]
NOTEBOOK_STAGES = ["captions", "embed", "zero_shot", "adapter", "trainable", "analysis"]
LIB = Path("lib/siglip_adapter")
PACKAGES = ("siglip_adapter", "kit_tools")  # the kit and its tools (lib/kit_tools)


@pytest.fixture(scope="module")
def dvc(root):
    return yaml.safe_load((root / "dvc.yaml").read_text())


def _module_file(root: Path, dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root / "lib" / Path(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(source: str, module: str | None, is_package: bool) -> set[str]:
    """Dotted names of the kit's modules (``PACKAGES``) a piece of code imports (function-level too)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def notebook_code(notebook: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")


def modules_run_by(root: Path, code: str) -> set[Path]:
    """Every lib file some code runs, following imports transitively (packages' __init__ too)."""
    todo = list(_imports(code, None, False))
    seen: set[Path] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for n in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            f = _module_file(root, ".".join(parts[:n]))
            if f is None or f in seen:
                continue
            seen.add(f)
            mod = ".".join(parts[:n])
            todo += _imports(f.read_text(), mod, f.name == "__init__.py")
    return {f.relative_to(root) for f in seen}


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def test_every_stage_depends_on_all_the_code_it_runs(dvc, root):
    for name, nb in zip(NOTEBOOK_STAGES, NOTEBOOKS):
        body = dvc["stages"][name].get("do", dvc["stages"][name])
        nb_path = root / "notebooks" / f"{nb}.ipynb"
        assert f"notebooks/{nb}.ipynb" in body["cmd"] and f"notebooks/{nb}.ipynb" in body["deps"]
        used = modules_run_by(root, notebook_code(nb_path) + "\n" + _commands(body["cmd"]))  # the notebook, and the tidying after it
        missing = sorted(str(p) for p in used if not _covered(p, body["deps"]))
        assert not missing, f"stage {name} runs {missing} but does not list them in its deps"


def _commands(cmd: str) -> str:
    """The modules a stage's command runs (``python -m``), as imports."""
    import re

    return "\n".join(f"import {m}" for m in re.findall(rf"python -m ((?:{'|'.join(PACKAGES)})[\w.]*)", cmd))


def test_the_module_stages_depend_on_all_the_code_they_run(dvc, root):
    """The stages that run a module (`python -m siglip_adapter...` or `kit_tools...`: the digits, the
    images' fingerprint, the ablation, the cards) list every lib file it imports."""
    seen = set()
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        if name in NOTEBOOK_STAGES or not _commands(body["cmd"]):
            continue
        seen.add(name)
        used = modules_run_by(root, _commands(body["cmd"]))
        missing = sorted(str(p) for p in used if not _covered(p, body["deps"]))
        assert not missing, f"stage {name} runs {missing} but does not list them in its deps"
    assert {"digits_data", "images", "ablation", "cards"} <= seen
    assert "results/ablation" in dvc["stages"]["analysis"]["deps"]


def test_the_import_scan_sees_a_module_a_stage_misses(dvc, root):
    """The guard above can fail: drop data.py from the adapter stage's deps and it is reported."""
    body = dvc["stages"]["adapter"]
    used = modules_run_by(root, notebook_code(root / "notebooks" / "04_adapter.ipynb"))
    assert LIB / "data.py" in used and LIB / "sources" / "base.py" in used  # through inputs -> data -> sources.base
    deps = [d for d in body["deps"] if d != str(LIB / "data.py")]
    assert not _covered(LIB / "data.py", deps)


def test_a_stage_that_finds_modules_at_run_time_depends_on_their_whole_package(dvc, root):
    """The import scan cannot see what is found at run time: a source's kind module
    (``sources.build_source``) and the method modules (``methods.loop`` runs them through the
    registry). A stage that builds a source, or runs methods, lists the whole package."""
    found_at_run_time = {LIB / "sources" / "__init__.py": "lib/siglip_adapter/sources", LIB / "methods" / "loop.py": "lib/siglip_adapter/methods"}
    checked = set()
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        code = notebook_code(root / "notebooks" / f"{NOTEBOOKS[NOTEBOOK_STAGES.index(name)]}.ipynb") if name in NOTEBOOK_STAGES else ""
        used = modules_run_by(root, code + "\n" + _commands(body["cmd"]))
        for module, package in found_at_run_time.items():
            if module in used:
                checked.add((name, package))
                assert package in body["deps"], f"stage {name} runs {module}, which imports modules of {package} at run time; list {package}"
    assert ("adapter", "lib/siglip_adapter/methods") in checked and ("captions", "lib/siglip_adapter/sources") in checked


def test_what_each_stage_reads_of_params_exists(root):
    """Every section ``stage_params.READS`` names is in its file: a dotted key (methods.zero_shot)
    names a section inside one."""
    from siglip_adapter import stage_params

    files = {stage_params.DEFAULTS: read_yaml(root / stage_params.DEFAULTS), stage_params.RUN: read_yaml(root / stage_params.RUN)}
    for kind, reads in stage_params.READS.items():
        assert stage_params.DATASET in reads and reads[stage_params.DATASET] is None, kind  # the dataset's file, whole
        for file, keys in reads.items():
            for key in keys or []:
                section = files[file]
                for part in key.split("."):
                    assert isinstance(section, dict) and part in section, f"{kind}: {key} not in {file}"
                    section = section[part]


def test_each_stage_reads_params_through_its_kinds_file_only(dvc):
    """DVC records a stage's params in dvc.lock and rewrites the whole lock after every stage: only
    the stage_params stage (once per dataset), the images (its dataset's file) and the analysis
    (params/run.yaml's lists) declare params; every stage of a kind of ``READS`` depends on its
    kind's file of the stage_params stage's output instead."""
    from siglip_adapter import stage_params

    declaring = {name for name, stage in dvc["stages"].items() if stage.get("do", stage).get("params")}
    assert declaring == {"stage_params", "images", "analysis"}, declaring
    recorded = dvc["stages"]["stage_params"]["do"]["params"]
    assert {"params/defaults.yaml": None} in recorded and {"params/${item}.yaml": None} in recorded
    assert dvc["stages"]["stage_params"]["do"]["outs"][0] == {"results/stage_params/${item}": {"persist": True, "cache": False}}
    for kind in stage_params.READS:
        body = dvc["stages"][kind].get("do", dvc["stages"][kind])
        item = "${item}" if "do" in dvc["stages"][kind] else "${item.dataset}"
        assert f"results/stage_params/{item}/{kind}.json" in body["deps"], kind
    assert set(stage_params.READS) >= set(NOTEBOOK_STAGES[:-1])


def test_the_zero_shot_stage_reruns_when_a_zero_shot_method_changes():
    """03_zero_shot reads the zero-shot methods' parameters only (not every method's): each method
    of kind zero-shot is listed by its dotted key."""
    from siglip_adapter import stage_params
    from siglip_adapter.methods import registry

    keys = stage_params.READS["zero_shot"][stage_params.DEFAULTS]
    zero_shot = [m for m, d in registry.discover().items() if d.kind == "zero-shot" and d.in_kit]
    assert zero_shot and {f"methods.{m}" for m in zero_shot} <= set(keys), keys
    assert "methods" not in keys


def test_adding_a_dataset_backbone_or_protocol_needs_no_edit_of_dvc_yaml(dvc):
    """Per-run stages iterate datasets x backbones x protocols of params/run.yaml; the analysis
    reads the whole results/runs/ folder."""
    for name in NOTEBOOK_STAGES[:-1]:
        assert dvc["stages"][name]["matrix"] == {"dataset": "${datasets}", "backbone": "${backbones}", "protocol": "${protocols}"}
    assert "results/runs" in dvc["stages"]["analysis"]["deps"]
    assert "${" not in yaml.safe_dump(dvc["stages"]["analysis"]).replace("${threads}", "")


def test_notebooks_have_a_parameters_cell_defaulting_to_smoke(root):
    for nb in NOTEBOOKS:
        cells = json.loads((root / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb
        assert 'overlay = "smoke"' in "".join(tagged[0]["source"]), nb


def _dvc_stale(repo) -> dict:
    """{stage: what changed} from ``dvc status``: changed deps, edited outputs and changed commands.
    Outputs that are only absent (caches not pulled into a fresh clone) are not a change."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    stale = {}
    for stage, entries in json.loads(out.stdout or "{}").items():
        for entry in entries:
            if entry == "changed command" or (isinstance(entry, dict) and "changed command" in entry):
                stale.setdefault(stage, {})["command"] = "changed"
            if not isinstance(entry, dict):
                continue
            for kind in ("changed deps", "changed outs"):
                hits = {p: how for p, how in entry.get(kind, {}).items() if how not in ("deleted", "not in cache")}
                if hits:
                    stale.setdefault(stage, {})[kind] = hits
    return stale


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory, root):
    """A copy of the tracked pipeline (code, params, notebooks, results, dvc.lock), no .git (as a Kaggle input is)."""
    repo = tmp_path_factory.mktemp("dvcrepo")
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    if "dvc.lock" not in files:
        pytest.skip("no dvc.lock committed yet")
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, repo / f)
    # What `make repro` does in a copy without .git (and the README's one command for it).
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], cwd=repo, check=True)
    return repo


def test_committed_results_match_the_code_and_params(dvc_copy):
    stale = _dvc_stale(dvc_copy)
    assert stale == {}, f"dvc.lock is behind the code, params or outputs (run `make repro` and commit results/): {stale}"


def test_dvc_lock_records_only_the_stages_of_dvc_yaml(root):
    """DVC never drops a lock entry whose stage is gone (a renamed stage, a dataset taken out of
    params/run.yaml), and it parses the whole lock file several times per stage it runs: dead
    entries only slow every `dvc` command down. Drop them when a stage goes."""
    live = set(subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.split())
    locked = set(yaml.safe_load((root / "dvc.lock").read_text())["stages"])
    assert live and not locked - live, f"dvc.lock records stages dvc.yaml no longer has: {sorted(locked - live)}"


def test_an_edited_output_is_stale(dvc_copy):
    """The guard above reads outputs too: a hand-edited result is caught."""
    csv = dvc_copy / "results" / "runs" / run_datasets(dvc_copy)[0] / run_backbones(dvc_copy)[0] / run_protocols(dvc_copy)[0] / "04_adapter.csv"
    original = csv.read_text()
    try:
        csv.write_text(original.replace("0.", "0.9", 1))
        assert any("changed outs" in v for v in _dvc_stale(dvc_copy).values())
    finally:
        csv.write_text(original)


def _write_stage_params(repo: Path) -> None:
    """What ``dvc repro`` runs first for each dataset (the stage_params stage's command), in ``repo``."""
    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(repo)}
    subprocess.run([sys.executable, "-m", "siglip_adapter.stage_params", *run_datasets(repo)], cwd=repo, env=env, check=True)


def test_an_adapter_parameter_reruns_only_the_stages_that_read_it(dvc_copy):
    """An edit of params/ makes the stage_params stages stale (what ``dvc status`` reports before
    anything runs); once they have run (the first stage of each dataset's ``dvc repro``), the
    adapter stages are stale, and those whose trained methods start from the adapter's choice: the
    trainable stages, the ablation and the cards; not the captions, features or zero-shot."""
    defaults = dvc_copy / "params" / "defaults.yaml"
    original = defaults.read_text()
    try:
        head, tail = original.split("\n  adapter:", 1)  # methods.adapter (tip_adapter_wide's theta, above it, is the same list)
        cfg = yaml.safe_load(original)
        defaults.write_text(head + "\n  adapter:" + tail.replace(f"theta: {cfg['methods']['adapter']['theta']}", "theta: [1.0, 99.0]", 1))
        changed = yaml.safe_load(defaults.read_text())["methods"]
        assert changed["adapter"]["theta"] == [1.0, 99.0] and changed["tip_adapter_wide"]["theta"] == cfg["methods"]["tip_adapter_wide"]["theta"]
        recorders = {f"stage_params@{ds}" for ds in run_datasets(dvc_copy)}
        assert set(_dvc_stale(dvc_copy)) == recorders
        _write_stage_params(dvc_copy)
        runs = [f"{ds}-{b}-{p}" for ds in run_datasets(dvc_copy) for b in run_backbones(dvc_copy) for p in run_protocols(dvc_copy)]
        assert set(_dvc_stale(dvc_copy)) == (recorders | {f"adapter@{r}" for r in runs} | {f"trainable@{r}" for r in runs}
                                             | {f"{stage}@{ds}" for ds in run_datasets(dvc_copy) for stage in ("ablation", "cards")})
    finally:
        defaults.write_text(original)
        _write_stage_params(dvc_copy)
    assert _dvc_stale(dvc_copy) == {}


def _stage_io(root: Path) -> list[tuple[str, set[str], set[str]]]:
    """(name, deps, outs) of every stage, in the order `dvc stage list` gives (dvc.yaml's)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        order = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split()
        by_name = {s.addressing: s for s in repo.index.stages}
        rel = lambda o: Path(o.fs_path).relative_to(root).as_posix()  # noqa: E731
        return [(n, {rel(d) for d in by_name[n].deps}, {rel(o) for o in by_name[n].outs}) for n in order]


def _reads(deps: set[str], outs: set[str]) -> bool:
    return any(d == o or d.startswith(o + "/") or o.startswith(d + "/") for d in deps for o in outs)


def test_make_repro_runs_each_dataset_apart_in_a_valid_order(root):
    """scripts/repro.sh runs `digits_data`, then each dataset's stages (names `*@<dataset>` and
    `*@<dataset>-*`) in their own process in `dvc stage list` order with --single-item, then the
    analysis. That is right only if that order is topological, the selections cover every other
    stage exactly once, and no dataset's stage reads another dataset's outputs."""
    stages = _stage_io(root)
    script = (root / "scripts" / "repro.sh").read_text()
    assert "--single-item digits_data" in script and "--single-item analysis" in script
    for i, (name, deps, _) in enumerate(stages):
        later = [n for n, _, outs in stages[i + 1 :] if _reads(deps, outs)]
        assert not later, f"{name} reads outputs of {later}, listed after it in dvc.yaml"
    datasets = run_datasets(root)
    owner = {}
    for name, _, _ in stages:
        mine = [ds for ds in datasets if name.endswith(f"@{ds}") or f"@{ds}-" in name]
        assert len(mine) == 1 or (not mine and name in ("digits_data", "analysis")), (name, mine)
        owner[name] = mine[0] if mine else None
    for name, deps, _ in stages:
        for other, _, outs in stages:
            if owner[name] and owner[other] and owner[name] != owner[other]:
                assert not _reads(deps, outs), f"{name} reads {other}'s outputs: the datasets cannot run side by side"


def test_an_edited_image_makes_its_datasets_image_stages_stale(dvc_copy):
    """A user's images are a dependency, wherever params/<dataset>.yaml puts them: after one image
    is rotated, the `images` stage's re-hash (which every `dvc repro` runs) makes exactly the
    stages that read that dataset's images stale, and the analysis after them; the same images
    again make nothing stale. (The copy has no DVC cache, so digits_data's own output is not compared.)"""
    import os

    from PIL import Image

    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(dvc_copy), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run([sys.executable, "-m", *cmd], cwd=dvc_copy, env=env, check=True, capture_output=True)  # noqa: E731
    generate = lambda: run("kit_tools.digits", "data/generated/digits")  # noqa: E731
    rehash = lambda: run("dvc", "repro", "--single-item", "images@digits")  # noqa: E731
    generate()
    rehash()
    assert _dvc_stale(dvc_copy) == {}
    image = sorted((dvc_copy / "data" / "generated" / "digits" / "3").glob("*.png"))[0]
    try:
        Image.open(image).rotate(90).save(image)
        rehash()
        runs = [f"{b}-{p}" for b in run_backbones(dvc_copy) for p in run_protocols(dvc_copy)]
        assert set(_dvc_stale(dvc_copy)) == ({f"{stage}@digits-{r}" for stage in ("captions", "embed") for r in runs}
                                             | {"ablation@digits", "analysis", "images@fashion_mnist"})  # the last: its
        # dependency on data/generated (digits first), re-hashed by every run anyway
    finally:
        generate()
        rehash()
    assert _dvc_stale(dvc_copy) == {}


def test_a_noop_make_repro_runs_no_dvc_repro_and_an_edited_image_ends_the_shortcut(dvc, root, tmp_path):
    """scripts/repro.sh with nothing to do hashes the images itself and asks `dvc status` only
    (seconds, no `dvc repro`); after an image edit the same check sees images.json differ from
    dvc.lock and runs `dvc repro`, which reruns the stage that reads the images. The project here
    is dvc.yaml's `digits_data` and `images` stages as they are, a one-line stage per dataset that
    reads images.json, and a one-line analysis; DVC is a wrapper that records each call."""
    import os

    from PIL import Image

    repo = tmp_path / "repo"
    for part in ("lib", "params", "scripts"):
        shutil.copytree(root / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    stages = {name: dvc["stages"][name] for name in ("digits_data", "images")}
    stages["use"] = {"foreach": "${datasets}", "do": {"cmd": "cp results/runs/${item}/images.json used-${item}.json",
                                                      "deps": ["results/runs/${item}/images.json"], "outs": ["used-${item}.json"]}}
    stages["analysis"] = {"cmd": "cat used-*.json > analysis.txt", "deps": ["used-digits.json"], "outs": ["analysis.txt"]}
    stages["extra"] = {"cmd": "echo x > extra.txt", "outs": ["extra.txt"]}  # no dataset's: the last step runs it
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"vars": dvc["vars"], "stages": stages}, sort_keys=False))
    calls, fake = tmp_path / "dvc-calls", tmp_path / "dvc"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\nexec {sys.executable} -m dvc "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(repo), "DVC": str(fake), "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DATASETS", None)
    repro = lambda: subprocess.run(["bash", "scripts/repro.sh"], cwd=repo, env=env, capture_output=True, text=True)  # noqa: E731
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    # digits read from a folder of the user's (data/generated is digits_data's output, which DVC restores)
    subprocess.run([sys.executable, "-m", "kit_tools.digits", "data/mine"], cwd=repo, env=env, check=True, capture_output=True)
    params = repo / "params" / "digits.yaml"
    params.write_text(params.read_text().replace("root: generated/digits ", "root: mine ", 1))
    first = repro()
    assert first.returncode == 0 and "use@digits done" in first.stdout and "rest: extra done" in first.stdout, first.stdout + first.stderr
    lock = (repo / "dvc.lock").read_bytes()

    calls.unlink()
    done = repro()
    assert done.returncode == 0 and "repro: up to date" in done.stdout, done.stdout + done.stderr
    assert calls.read_text().splitlines() == ["status --json"]  # no `dvc repro` at all
    assert (repo / "dvc.lock").read_bytes() == lock

    before = json.loads((repo / "used-digits.json").read_text())
    image = sorted((repo / "data" / "mine" / "3").glob("*.png"))[0]
    Image.open(image).rotate(90).save(image)
    calls.unlink()
    done = repro()
    assert done.returncode == 0 and "repro: up to date" not in done.stdout, done.stdout + done.stderr
    assert calls.read_text().splitlines()[:2] == ["status --json", "repro --single-item digits_data images@fashion_mnist images@digits"]
    assert "digits: use@digits done" in done.stdout and "use@fashion_mnist started" not in done.stdout
    assert (repo / "used-digits.json").read_bytes() == (repo / "results" / "runs" / "digits" / "images.json").read_bytes()
    assert json.loads((repo / "used-digits.json").read_text())["sha256"] != before["sha256"]

    forced = subprocess.run(["bash", "scripts/repro.sh", "-f"], cwd=repo, env=env, capture_output=True, text=True)
    started = [line.split(": ", 1)[1].removesuffix(" started") for line in forced.stdout.splitlines() if line.endswith(" started")]
    assert forced.returncode == 0 and sorted(started) == sorted(["digits_data", "images@fashion_mnist", "images@digits", "use@fashion_mnist",
                                                                 "use@digits", "analysis", "extra"]), forced.stdout  # each stage once


def _outputs(stage: dict) -> list:
    body = stage.get("do", stage)
    return [o for kind in ("outs", "metrics") for o in body.get(kind, [])]


def test_a_failed_stage_keeps_the_last_runs_outputs(dvc, dvc_copy):
    """Every output is `persist` (DVC deletes the others before running their stage), and a stage
    that fails leaves its output as the last successful run wrote it."""
    for name, stage in dvc["stages"].items():
        for out in _outputs(stage):
            assert isinstance(out, dict) and list(out.values())[0].get("persist") is True, (name, out)
    import os

    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(dvc_copy), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "kit_tools.digits", "data/generated/digits"], cwd=dvc_copy, env=env, check=True,
                   capture_output=True)
    params, out = dvc_copy / "params" / "digits.yaml", dvc_copy / "results" / "runs" / "digits" / "images.json"
    original, recorded = params.read_text(), out.read_bytes()
    try:
        params.write_text(original.replace("source: folder", "source: nosuch", 1))
        failed = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "images@digits"], cwd=dvc_copy, env=env,
                                capture_output=True, text=True)
        assert failed.returncode != 0 and "nosuch" in failed.stdout + failed.stderr
        assert out.read_bytes() == recorded
    finally:
        params.write_text(original)


DVC_OUTPUT = """Running stage 'images@digits':
> python -m siglip_adapter.fingerprint digits
Updating lock file 'dvc.lock'
Stage 'embed@digits-offline-conse-corrected' didn't change, skipping
Running stage 'captions@digits-offline-conse-corrected':
> papermill notebooks/01_captions.ipynb out.ipynb
Traceback (most recent call last):
papermill.exceptions.PapermillExecutionError:
Exception encountered at "In [3]":
\x1b[0;31mValueError\x1b[0m                                Traceback (most recent call last)
----> 1 raise ValueError("params/shapes.yaml: shots: K=16 is larger than the training images of 3 classes")
\x1b[0;31mValueError\x1b[0m: params/shapes.yaml: shots: K=16 is larger than the training images of 3 classes
ERROR: failed to reproduce 'captions@digits-offline-conse-corrected': failed to run: papermill ..., exited with 1
"""


def test_make_repro_shows_each_stage_and_a_failed_stages_own_error(root, tmp_path):
    """scripts/progress.py (make repro's console): a line per stage started and finished, the
    failed stage's own exception line (ANSI colours removed) before DVC's summary, the log whole."""
    log = tmp_path / "repro.log"
    shown = subprocess.run([sys.executable, str(root / "scripts" / "progress.py"), "digits", str(log)], input=DVC_OUTPUT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    said = [line.split("] ", 1)[1] for line in shown]
    assert said[:3] == ["digits: images@digits started", said[1], "digits: captions@digits-offline-conse-corrected started"]
    assert said[1].startswith("digits: images@digits done in ")
    assert said[3] == ("digits: captions@digits-offline-conse-corrected failed: ValueError: params/shapes.yaml: shots: K=16 is "
                       "larger than the training images of 3 classes")
    assert said[4].startswith("digits: ERROR: failed to reproduce") and said[5] == f"digits: the whole output: {log}"
    assert said[-1] == "digits: 2 stage(s) ran, 1 up to date"
    assert log.read_text() == DVC_OUTPUT


def test_a_failed_command_stage_shows_its_own_one_line_message(root, tmp_path):
    """A stage that runs a kit command (not a notebook) and stops on a user's mistake: its own line
    (the images folder that is not there) on the console, before DVC's summary."""
    output = ("Running stage 'images@shapes':\n> python -m siglip_adapter.fingerprint shapes\n"
              "images shapes: dataset.root: /home/me/kit/data/shapes is not a folder\n"
              "ERROR: failed to reproduce 'images@shapes': failed to run: python -m siglip_adapter.fingerprint shapes, exited with 2\n")
    shown = subprocess.run([sys.executable, str(root / "scripts" / "progress.py"), "setup", str(tmp_path / "log")], input=output,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    said = [line.split("] ", 1)[1] for line in shown]
    assert said[1] == "setup: images@shapes failed: images shapes: dataset.root: /home/me/kit/data/shapes is not a folder", said
    assert said[2].startswith("setup: ERROR: failed to reproduce 'images@shapes'")


def test_every_stage_that_computes_sets_its_own_thread_count(dvc, root):
    """`make repro` and a plain `dvc repro` compute with the same CPU thread count (part of the
    numbers): every stage that runs the kit exports params/run.yaml's `threads` first."""
    assert isinstance(yaml.safe_load((root / "params" / "run.yaml").read_text())["threads"], int)
    for name, stage in dvc["stages"].items():
        cmd = stage.get("do", stage)["cmd"]
        if name in ("digits_data", "images", "stage_params"):  # no torch: files written and hashed
            continue
        assert cmd.startswith("export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads} && "), name
    script = (root / "scripts" / "repro.sh").read_text()
    assert "OMP_NUM_THREADS=" not in script.replace("`OMP_NUM_THREADS`", "")  # make repro leaves it to the stages
