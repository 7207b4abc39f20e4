"""The kit's methods against their authors' own code, configured as the authors did.

The peers' numbers were recorded once by ``scripts/peer_parity.py`` (their code run on the CPU on
the parity feature sets, ``kit_tools.parity``): ``tests/fixtures/parity/<method>.json`` with the
peer's repository and commit. Here the kit's method, with its defaults (params/defaults.yaml),
is fitted on the same shots and validation images and scored on the same test images; its mean
test accuracy over the seeds must be within 0.3 points of the peer's at every K.
"""

import json
from pathlib import Path

import pytest

from kit_tools import parity
from siglip_adapter.config import load_config
from siglip_adapter.methods import loop, registry

TOLERANCE = 0.003  # 0.3 points of accuracy, on the mean over seeds at each K
RECORDS = sorted((parity.FOLDER).glob("*.json"))


def kit_cells(name: str, dataset: str, params: dict, val_per_class: int | None = None, classnames: list[str] | None = None,
              encoder=None) -> dict[tuple[int, int], dict]:
    """{(K, seed): {accuracy, chosen}} of the kit's method on one parity set (validation: the whole
    split, or the fixture's ``val_per_class`` sample of it; ``classnames`` and ``encoder`` for a
    method trained through the text tower)."""
    data = parity.load(dataset)
    test = data.labelled("test")
    out = {}
    for k, seed in data.cells():
        fitted = registry.get(name).fit(data.task(k, seed, val_per_class, classnames, encoder), params)
        out[(k, seed)] = {"accuracy": fitted.accuracy(test), "chosen": fitted.chosen}
    return out


def per_k_gaps(record: dict, kit: dict) -> dict[tuple[str, int], float]:
    """(dataset, K) -> kit minus peer, mean test accuracy over the seeds."""
    gaps = {}
    for dataset in record["features"]:
        cells = [c for c in record["cells"] if c["dataset"] == dataset]
        for k in sorted({c["shots"] for c in cells}):
            at = [c for c in cells if c["shots"] == k]
            gaps[(dataset, k)] = sum(kit[(dataset, k, c["seed"])]["accuracy"] - c["accuracy"] for c in at) / len(at)
    return gaps


@pytest.fixture(scope="module")
def params(root) -> dict:
    return load_config("digits", root=root)["methods"]


def test_every_recorded_peer_has_a_fixture_with_its_source():
    assert {p.stem for p in RECORDS} >= {"gda", "tip_adapter", "proker", "lp_pp", "clap", "zs_lp", "ape", "ape_t", "taskres", "linear_probe", "clip_adapter", "coop"}
    for path in RECORDS:
        record = json.loads(path.read_text())
        assert record["repository"].count("/") == 1 and len(record["commit"]) == 40, path
        assert record["cells"], path


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_method_reproduces_its_authors_code(path: Path, params, tmp_path):
    record = json.loads(path.read_text())
    name = record["method"]
    kit = {}
    tower = record["settings"].get("text_tower")  # CoOp: the tiny CLIP both sides ran on, rebuilt from its recipe
    if tower:
        assert {k: tower[k] for k in parity.COOP_TOWER} == parity.COOP_TOWER, f"{path.name}: recorded on another tower than parity.COOP_TOWER"
    for dataset, fingerprint in record["features"].items():
        data = parity.load(dataset)
        assert data.fingerprint() == fingerprint, f"{dataset}: the parity features changed since {path.name} was recorded"
        encoder = parity.coop_encoder(tmp_path / dataset, data.class_text.shape[1], tower["seed"]) if tower else None
        kit.update({(dataset, *cell): v for cell, v in kit_cells(name, dataset, loop.params_of({"methods": params}, name),
                                                                record["settings"].get("val_per_class"),
                                                                (record.get("classnames") or {}).get(dataset), encoder).items()})
    gaps = per_k_gaps(record, kit)
    far = {key: round(100 * gap, 2) for key, gap in gaps.items() if abs(gap) > TOLERANCE}
    assert not far, f"{name} differs from {record['repository']}@{record['commit'][:7]} by more than 0.3 points (kit - peer, points): {far}"
