"""Nothing the kit runs unpickles data or runs a model repository's own code.

A scan of every Python file and notebook the project ships (lib/, bench/, notebooks/, scripts/,
tests/): the calls that can execute code hidden in a file (pickle and its wrappers, ``torch.load``
without ``weights_only=True``, NumPy with ``allow_pickle=True``) and ``trust_remote_code=True``
(transformers running a hub repository's Python) must not appear. Artefacts are safetensors,
Parquet and JSON only. The scan is checked against planted examples so it cannot pass by
matching nothing.
"""

import ast
import json
from pathlib import Path

import pytest

FORBIDDEN_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("dill", "load"), ("dill", "loads"),
    ("joblib", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
    ("shelve", "open"), ("marshal", "loads"), ("marshal", "load"),
}
SCANNED = ["lib", "bench", "notebooks", "scripts", "tests"]


def _name(node: ast.AST) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def problems(source: str) -> list[str]:
    """What in this Python source can run code hidden in data, by line."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "cloudpickle", "joblib") and \
                any(a.name in ("load", "loads", "Unpickler") for a in node.names):
            out.append(f"{node.lineno}: from {node.module} import a loader")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in FORBIDDEN_CALLS:
            out.append(f"{node.lineno}: {name[0]}.{name[1]}")
        if name and name[1] == "load" and name[0] == "torch":
            w = _kw(node, "weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                out.append(f"{node.lineno}: torch.load without weights_only=True")
        allow = _kw(node, "allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            out.append(f"{node.lineno}: allow_pickle=True")
        remote = _kw(node, "trust_remote_code")
        if remote is not None and not (isinstance(remote, ast.Constant) and remote.value is False):
            out.append(f"{node.lineno}: trust_remote_code enabled")
    return out


def _sources(root: Path):
    for top in SCANNED:
        for path in sorted((root / top).rglob("*")):
            if path.suffix == ".py" and path.name != Path(__file__).name:
                yield path, path.read_text()
            elif path.suffix == ".ipynb" and ".ipynb_checkpoints" not in path.parts:
                cells = json.loads(path.read_text())["cells"]
                code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
                yield path, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("planted", [
    "import pickle\npickle.load(open('x', 'rb'))",
    "import torch\ntorch.load('w.pt')",
    "import torch\ntorch.load('w.pt', weights_only=False)",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "import pandas as pd\npd.read_pickle('f.pkl')",
    "from joblib import load",
    "from transformers import AutoModel\nAutoModel.from_pretrained('m', trust_remote_code=True)",
    "from transformers import AutoModel\nflag = True\nAutoModel.from_pretrained('m', trust_remote_code=flag)",
])
def test_the_scan_finds_each_planted_loader(planted):
    assert problems(planted)


def test_the_scan_accepts_the_safe_forms():
    assert problems("import torch\ntorch.load('w.pt', map_location='cpu', weights_only=True)\n"
                    "from safetensors.torch import load_file\nload_file('x.safetensors')\n"
                    "import numpy as np\nnp.load('a.npy')\n") == []


def test_no_pickle_and_no_remote_code_anywhere(root):
    found = {str(path.relative_to(root)): p for path, src in _sources(root) if (p := problems(src))}
    assert found == {}, f"code that can unpickle data or run a hub repository's code: {found}"
    scanned = [p for p, _ in _sources(root)]
    assert any(p.suffix == ".ipynb" for p in scanned) and any("siglip_adapter" in p.parts for p in scanned)


def test_no_pickled_artefacts_are_tracked(root):
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    bad = [f for f in tracked if Path(f).suffix in (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".npy", ".npz")]
    assert bad == []
