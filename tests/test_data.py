"""Split manifest, K-shot sampling and the IDX reader."""

import gzip

import numpy as np
import pytest

from siglip_adapter.data import make_manifest, manifest_hash, sample_shots, shot_image_ids
from siglip_adapter.sources.fashion_mnist import ArraySource, read_idx

FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}


@pytest.fixture
def source():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 60)
    return ArraySource({"train": (rng.integers(0, 255, (300, 8, 8), dtype=np.uint8), labels)}, [f"c{i}" for i in range(5)])


def test_manifest_is_stratified_disjoint_and_deterministic(source):
    m = make_manifest(source, per_class=50, fractions=FRACTIONS, seed=3)
    counts = m.groupby(["label", "split"]).size().unstack()
    assert (counts["train"] == 35).all() and (counts["val"] == 10).all() and (counts["test"] == 5).all()
    assert m["image_id"].is_unique
    assert m.equals(make_manifest(source, per_class=50, fractions=FRACTIONS, seed=3))
    assert manifest_hash(m) != manifest_hash(make_manifest(source, per_class=50, fractions=FRACTIONS, seed=4))


def test_manifest_hash_sees_a_changed_label(source):
    m = make_manifest(source, per_class=20, fractions=FRACTIONS, seed=0)
    changed = m.copy()
    changed.loc[0, "label"] = (changed.loc[0, "label"] + 1) % 5
    assert manifest_hash(changed) != manifest_hash(m)


def test_too_small_class_is_a_clear_error(source):
    with pytest.raises(ValueError, match="c0"):
        make_manifest(source, per_class=2, fractions=FRACTIONS, seed=0)


def test_shots_are_per_class_from_train_nested_and_seeded(source):
    m = make_manifest(source, per_class=60, fractions=FRACTIONS, seed=0)
    s1, s4, s16 = (sample_shots(m, k, seed=7) for k in (1, 4, 16))
    for k, s in ((1, s1), (4, s4), (16, s16)):
        assert (s.groupby("label").size() == k).all() and (s["split"] == "train").all()
    assert set(s1["image_id"]) <= set(s4["image_id"]) <= set(s16["image_id"])
    assert sample_shots(m, 4, seed=7).equals(s4)
    assert set(sample_shots(m, 4, seed=8)["image_id"]) != set(s4["image_id"])
    used = shot_image_ids(m, 4, [7, 8])
    assert set(s4["image_id"]) <= set(used) and len(used) <= 2 * 4 * 5
    with pytest.raises(ValueError, match="fewer than K"):
        sample_shots(m, 100, seed=0)


def test_read_idx_roundtrip_and_truncation(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    good = tmp_path / "x-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(header + a.tobytes()))
    np.testing.assert_array_equal(read_idx(good), a)
    bad = tmp_path / "y-idx3-ubyte"
    bad.write_bytes(header + a.tobytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)


def test_source_loads_rgb_and_inverts():
    x = np.full((1, 4, 4), 10, dtype=np.uint8)
    plain = ArraySource({"p": (x, np.array([0]))}, ["a"]).load(["p/0"])[0]
    inverted = ArraySource({"p": (x, np.array([0]))}, ["a"], invert=True).load(["p/0"])[0]
    assert plain.mode == "RGB" and np.asarray(plain)[0, 0, 0] == 10 and np.asarray(inverted)[0, 0, 0] == 245
    with pytest.raises(KeyError):
        ArraySource({"p": (x, np.array([0]))}, ["a"]).load(["p/5"])


def test_missing_data_without_hub_is_a_clear_error(tmp_path, monkeypatch):
    from siglip_adapter.sources.fashion_mnist import fashion_mnist_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"no IDX files.*make data"):
        fashion_mnist_source({"idx_dir": str(tmp_path), "hub_id": "zalando-datasets/fashion_mnist", "classnames": ["a"]})
