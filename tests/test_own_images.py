"""The README's "Bring your own images", followed word for word in a copy of the project: a folder
of 90 generated shape images, the params file and the run.yaml lines the README shows, then its
commands (`scan`, `make repro DATASETS=shapes`, `predict`), and what it says comes out. Takes a
few minutes (every stage of one small dataset, the ablation and the card)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw
from test_pipeline import _dvc_stale

from siglip_adapter.runs import run_backbones, run_protocols

SHAPES = ("circle", "square", "triangle")


def readme_section(root: Path, title: str) -> str:
    text = (root / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def blocks(section: str, lang: str) -> list[str]:
    """The fenced code blocks of one language, de-indented (the README nests them in a list)."""
    found = re.findall(rf"^( *)```{lang}\n(.*?)^\1```", section, flags=re.S | re.M)
    return ["\n".join(line[len(indent):] for line in body.splitlines()) for indent, body in found]


def draw_shapes(folder: Path, per_class: int = 30, seed: int = 0) -> None:
    """Outlines of circles, squares and triangles, at random sizes, places and colours."""
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(200, 256, 3)))
            d = ImageDraw.Draw(im)
            r = int(rng.integers(12, 28))
            cx, cy = (int(v) for v in rng.integers(r + 2, 62 - r, 2))
            colour = tuple(int(v) for v in rng.integers(0, 120, 3))
            box = (cx - r, cy - r, cx + r, cy + r)
            if shape == "circle":
                d.ellipse(box, outline=colour, width=3)
            elif shape == "square":
                d.rectangle(box, outline=colour, width=3)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline=colour, width=3)
            im.save(folder / shape / f"{i:03d}.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory, root):
    """A copy of the tracked project with the environment of this one (a link to .venv)."""
    repo = tmp_path_factory.mktemp("own-images")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (root / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, repo / f)
    (repo / ".venv").symlink_to(Path(sys.prefix))
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], cwd=repo, check=True)
    return repo


def run(repo: Path, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(repo), "SIGLIP_ADAPTER_DATA": str(repo / "data"),
           "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=1800)


def test_the_readme_own_images_section_word_for_word(project, root):
    section = readme_section(root, "Bring your own images")
    params = next(b for b in blocks(section, "yaml") if b.startswith("# params/shapes.yaml"))
    run_yaml = next(b for b in blocks(section, "yaml") if b.startswith("# params/run.yaml"))
    commands = [line for b in blocks(section, "bash") for line in b.splitlines() if line.strip()]
    assert [c.split()[0:2] for c in commands] == [[".venv/bin/siglip-adapter", "scan"], ["make", "repro"],
                                                 [".venv/bin/siglip-adapter", "predict"]]

    draw_shapes(project / "data" / "shapes")
    (project / "params" / "shapes.yaml").write_text(params + "\n")
    listed = yaml.safe_load(run_yaml)["datasets"]
    current = (project / "params" / "run.yaml").read_text()
    old = re.search(r"^datasets:\n(  - .*\n)+", current, flags=re.M).group(0)
    (project / "params" / "run.yaml").write_text(current.replace(old, "datasets:\n" + "".join(f"  - {d}\n" for d in listed)))

    scan = run(project, commands[0])
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert "90 images found, 90 usable" in scan.stdout and "3 classes" in scan.stdout

    repro = run(project, commands[1])
    print(repro.stdout)  # the stages' progress with their times (pytest -rP shows it)
    assert repro.returncode == 0, repro.stdout[-4000:] + repro.stderr[-4000:]
    assert re.search(r"shapes: captions@shapes-\S+ started", repro.stdout) and "analysis: analysis done" in repro.stdout
    assert "fashion_mnist: " not in repro.stdout  # the others' stages were not run

    table = pd.read_csv(project / "results" / "table1.csv")
    mine = table[table["dataset"] == "shapes"]
    assert {"corrected", "realistic", "paper"} <= set(mine["protocol"]) and {"zero_shot", "adapter", "trainable"} <= set(mine["method"])
    assert "shapes" in (project / "results" / "table1.md").read_text()
    assert "shapes" in (project / "results" / "ablation.md").read_text()
    cards = list((project / "results" / "shapes" / "cards").glob("*.json"))
    assert len(cards) == 1

    predict = run(project, commands[2])
    assert predict.returncode == 0, predict.stderr
    rows = pd.read_csv(pd.io.common.StringIO(predict.stdout))
    assert len(rows) == 30 and set(rows["class"].dropna()) <= set(SHAPES)

    # An edited image makes this dataset's image-reading stages stale, and nothing of the others.
    before = set(_dvc_stale(project))
    image = project / "data" / "shapes" / "square" / "000.png"
    Image.open(image).rotate(90).save(image)
    rehash = run(project, ".venv/bin/dvc repro --single-item images@shapes")
    assert rehash.returncode == 0, rehash.stderr
    runs = [f"{b}-{p}" for b in run_backbones(project) for p in run_protocols(project)]
    assert set(_dvc_stale(project)) - before == ({f"{s}@shapes-{r}" for s in ("captions", "embed") for r in runs}
                                                 | {"ablation@shapes", "analysis"}) - before
