"""The content-keyed feature cache: reuse when nothing changed, refuse anything stale."""

import json
from pathlib import Path

import pytest
import torch
from helpers import kill_midway
from safetensors.torch import load_file

from siglip_adapter.store import CorruptCacheError, FeatureStore, StaleCacheError, cache_key

FIELDS = {"kind": "image", "encoder": "siglip", "model_id": "google/siglip-base-patch16-224", "revision": "", "manifest": "abc"}


def test_roundtrip_is_safetensors_with_ids(tmp_path):
    store = FeatureStore(tmp_path)
    values = torch.randn(3, 5)
    path = store.save("image", FIELDS, ["a", "b", "c"], values, meta={"logit_scale": 2.0})
    assert set(load_file(str(path))) == {"values"}  # plain tensors, no pickled objects
    got = store.load("image", FIELDS)
    torch.testing.assert_close(got.values, values)
    assert got.ids == ["a", "b", "c"] and got.meta == {"logit_scale": 2.0}
    torch.testing.assert_close(got.take(["c", "a"]), values[[2, 0]])


@pytest.mark.parametrize("field,value", [("model_id", "google/siglip2-base-patch16-224"), ("revision", "abc123"), ("manifest", "def")])
def test_key_changes_with_what_changes_the_content(field, value):
    assert cache_key({**FIELDS, field: value}) != cache_key(FIELDS)


def test_stale_entry_is_refused(tmp_path):
    store = FeatureStore(tmp_path)
    path = store.save("image", FIELDS, ["a"], torch.ones(1, 2))
    other = {**FIELDS, "model_id": "something-else"}
    # An entry copied under another settings' name (or a hash collision) is not silently reused.
    path.rename(store.path("image", other))
    with pytest.raises(StaleCacheError, match="model_id"):
        store.load("image", other)


def test_get_or_compute_reuses_and_recomputes(tmp_path):
    store = FeatureStore(tmp_path)
    calls = []

    def compute(ids):
        calls.append(list(ids))
        return torch.randn(len(ids), 4)

    first, reused = store.get_or_compute("image", FIELDS, ["a", "b"], compute)
    assert not reused
    again, reused = store.get_or_compute("image", FIELDS, ["a", "b"], compute)
    assert reused and torch.equal(first.values, again.values) and len(calls) == 1
    _, reused = store.get_or_compute("image", FIELDS, ["a", "b", "c"], compute)
    assert not reused and calls[-1] == ["a", "b", "c"]
    _, reused = store.get_or_compute("image", {**FIELDS, "manifest": "new"}, ["a", "b", "c"], compute)
    assert not reused and len(calls) == 3


def test_index_names_the_current_entries(tmp_path):
    store = FeatureStore(tmp_path)
    store.save("image", FIELDS, ["a"], torch.ones(1, 2))
    store.save("image", {**FIELDS, "manifest": "old"}, ["z"], torch.zeros(1, 2))
    (tmp_path / "run").mkdir()
    store.write_index({"image": FIELDS}, tmp_path / "run" / "features.json")
    assert json.loads((tmp_path / "run" / "features.json").read_text())["image"]["fields"] == FIELDS
    assert store.load_index(tmp_path / "run" / "features.json")["image"].ids == ["a"]


def test_pool_computes_only_missing_ids_and_resumes_after_a_crash(tmp_path):
    ids = [f"i{n}" for n in range(10)]
    full = torch.randn(10, 3)
    calls = []

    def crashing(chunk):
        calls.append(list(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while computing the third chunk
        return full[[ids.index(i) for i in chunk]]

    with pytest.raises(KeyboardInterrupt):
        FeatureStore(tmp_path).rows("image", FIELDS, ids, crashing, chunk_size=4)
    calls.clear()
    feats, computed = FeatureStore(tmp_path).rows("image", FIELDS, ids, crashing, chunk_size=4)  # a new process
    assert computed == 2 and calls == [ids[8:]]  # only the unfinished chunk is computed again
    torch.testing.assert_close(feats.values, full)
    assert not list(tmp_path.rglob("*.tmp"))
    # Another run reading a subset and two new ids computes the two only, in its own order.
    extra = torch.randn(2, 3)
    calls.clear()
    feats, computed = FeatureStore(tmp_path).rows("image", FIELDS, ["new1", "i3", "new0", "i0"], lambda c: extra[[int(i[-1]) for i in c]])
    assert computed == 2
    torch.testing.assert_close(feats.values, torch.stack([extra[1], full[3], extra[0], full[0]]))
    # Rows of other settings are another pool; a chunk file moved into this pool is refused.
    _, computed = FeatureStore(tmp_path).rows("image", {**FIELDS, "mean": [0.0]}, ["i0"], lambda c: torch.zeros(len(c), 3))
    assert computed == 1
    stranger = tmp_path / FeatureStore._name("image", {**FIELDS, "mean": [0.0]})
    chunk = next(stranger.glob("chunk-*"))
    chunk.rename(tmp_path / FeatureStore._name("image", FIELDS) / chunk.name)
    with pytest.raises(StaleCacheError):
        FeatureStore(tmp_path).rows("image", FIELDS, ["i0"], crashing)


def test_caption_features_key_on_caption_text_and_images_on_the_ids_read():
    import pandas as pd

    from siglip_adapter.stages.embed import feature_fields

    class Encoder:
        def cache_fields(self):
            return {"encoder": "fake", "model_id": "fake"}

    cfg = {"dataset": {"name": "d", "source": "s", "template": "a {}.", "classnames": ["x", "y"]}}
    manifest = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "classname": ["x", "y"], "split": ["train", "test"]})
    caps = pd.DataFrame({"image_id": ["a", "b"], "caption": ["a red x.", "a blue y."], "captioner": "m", "prompt": "p",
                         "summariser": "t5", "token_limit": 64})
    before = feature_fields(cfg, Encoder(), manifest, caps, ["a", "b"])
    caps.loc[1, "caption"] = "a green y."
    after = feature_fields(cfg, Encoder(), manifest, caps, ["a", "b"])
    assert cache_key(after["caption"]) != cache_key(before["caption"])
    assert after["image"] == before["image"] and after["class_prompt"] == before["class_prompt"]
    # A run reading other images (another protocol's seeds or shots) gets its own image entry.
    assert cache_key(feature_fields(cfg, Encoder(), manifest, caps, ["a"])["image"]) != cache_key(after["image"])


def test_code_version_follows_code_not_comments(tmp_path):
    from siglip_adapter.store import code_hash, code_version

    f = tmp_path / "m.py"
    f.write_text("def f(x):\n    return x + 1\n")
    base = code_hash([f])
    f.write_text("# a comment\ndef f(x):  # another\n\n    return x + 1\n")
    assert code_hash([f]) == base
    f.write_text('"""A module."""\ndef f(x):\n    """Adds one."""\n    return x + 1\n')
    assert code_hash([f]) == base  # docstrings are documentation
    f.write_text('def f(x):\n    s = "not a docstring"\n    return x + 1\n')
    assert code_hash([f]) != base
    f.write_text("def f(x):\n    return x + 2\n")
    assert code_hash([f]) != base
    assert code_version("captions") != code_version("encoders") and code_version("captions") == code_version("captions")
    # A package stands for every module in its folder: a family or captioner module added there keys the caches too.
    import siglip_adapter.encoders as encoders

    folder = Path(encoders.__file__).parent
    assert code_version("encoders") == code_hash(sorted(folder.rglob("*.py"))) != code_version("encoders.base")


def _edit(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one byte of the last value flipped: the header still parses
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["edited", "truncated"])
def test_an_edited_or_truncated_entry_is_detected_and_rebuilt(tmp_path, how):
    store = FeatureStore(tmp_path)
    values = torch.randn(3, 4)
    path = store.save("image", FIELDS, ["a", "b", "c"], values)
    _edit(path, how)
    with pytest.raises(CorruptCacheError):
        store.load("image", FIELDS)  # never read as valid
    calls = []
    with pytest.warns(UserWarning, match="computing it again"):
        feats, reused = store.get_or_compute("image", FIELDS, ["a", "b", "c"], lambda ids: calls.append(ids) or values)
    assert not reused and len(calls) == 1
    torch.testing.assert_close(feats.values, values)
    torch.testing.assert_close(store.load("image", FIELDS).values, values)


@pytest.mark.parametrize("how", ["edited", "truncated"])
def test_an_edited_or_truncated_pool_chunk_is_computed_again(tmp_path, how):
    ids = [f"i{n}" for n in range(6)]
    full = torch.randn(6, 3)
    compute = lambda chunk: full[[ids.index(i) for i in chunk]]  # noqa: E731
    FeatureStore(tmp_path).rows("image", FIELDS, ids, compute, chunk_size=3)
    chunks = sorted((tmp_path / FeatureStore._name("image", FIELDS)).glob("chunk-*"))
    _edit(chunks[0], how)
    with pytest.warns(UserWarning, match="computed again"):
        feats, computed = FeatureStore(tmp_path).rows("image", FIELDS, ids, compute, chunk_size=3)
    assert computed == 3
    torch.testing.assert_close(feats.values, full)


def test_an_entry_replaced_after_the_index_was_written_is_refused(tmp_path):
    """A self-consistent file of the same settings swapped in (an older run's, say) passes its own
    hash; the run's index, which recorded the hash it was written with, refuses it."""
    store = FeatureStore(tmp_path)
    store.save("image", FIELDS, ["a"], torch.ones(1, 2))
    index = tmp_path / "features.json"
    store.write_index({"image": FIELDS}, index)
    assert store.load_index(index)["image"].ids == ["a"]
    store.save("image", FIELDS, ["a"], torch.zeros(1, 2))
    with pytest.raises(CorruptCacheError, match="replaced"):
        store.load_index(index)


def test_writes_are_flushed_before_the_rename_and_leave_nothing_on_failure(tmp_path, monkeypatch):
    import os

    from siglip_adapter import atomic as atomic_module

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic_module.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    target = tmp_path / "out.csv"
    atomic_module.write_atomic(target, lambda tmp: tmp.write_text("a,b\n"))
    assert target.read_text() == "a,b\n"
    assert synced[0].endswith(".tmp") and synced[-1] == str(tmp_path)  # the file before its rename, then the folder

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_module.write_atomic(target, failing)
    assert target.read_text() == "a,b\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# The embed stage's image path under a real `kill -9`: encode_image_ids (DataLoader decoding, the
# encoder's tower) into a pool through FeatureStore.rows, as stages.pools.tower_rows runs it.
_KILLED_EMBED = """
import sys, time
import numpy as np, torch
from siglip_adapter.encoders.base import encode_image_ids
from siglip_adapter.encoders.transforms import SquashNormalise
from siglip_adapter.sources.fashion_mnist import ArraySource
from siglip_adapter.store import FeatureStore

class SlowTower:  # an image's "tower output": its mean pixel per channel (its grey level)
    preprocess = SquashNormalise(4, [0.0] * 3, [1.0] * 3)
    def tower_pixels(self, pixels):
        time.sleep(0.1)
        return pixels.mean(dim=(2, 3))

x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(40)])
source = ArraySource({"p": (x, np.zeros(40, dtype=int))}, ["only"])
ids = [f"p/{i}" for i in range(40)]
FeatureStore(sys.argv[1]).rows("image_tower", {"kind": "image_tower", "t": 1}, ids,
                               lambda chunk: encode_image_ids(SlowTower(), source, chunk, 2, 0, tower=True), chunk_size=4)
"""


def test_a_killed_embedding_run_resumes_with_nothing_lost_or_redone(tmp_path):
    """A real ``kill -9`` while images are embedded: the rerun computes only the chunks the dead run
    had not finished, and the pool holds every id once with the right values."""
    import numpy as np

    from siglip_adapter.encoders.base import encode_image_ids
    from siglip_adapter.encoders.transforms import SquashNormalise
    from siglip_adapter.sources.fashion_mnist import ArraySource

    script = tmp_path / "run.py"
    script.write_text(_KILLED_EMBED)
    store = tmp_path / "store"
    fields = {"kind": "image_tower", "t": 1}
    pool = store / FeatureStore._name("image_tower", fields)
    pid = kill_midway(script, store, lambda: len(list(pool.glob("chunk-*.safetensors"))) >= 3)
    finished = {i for p in pool.glob("chunk-*.safetensors") for i in FeatureStore(store).load_path(p, fields).ids}
    assert 12 <= len(finished) < 40, "the run was not killed mid-way"

    class Tower:
        preprocess = SquashNormalise(4, [0.0] * 3, [1.0] * 3)

        def tower_pixels(self, pixels):
            return pixels.mean(dim=(2, 3))

    x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(40)])
    source = ArraySource({"p": (x, np.zeros(40, dtype=int))}, ["only"])
    ids = [f"p/{i}" for i in range(40)]
    computed = []

    def compute(chunk):
        computed.extend(chunk)
        return encode_image_ids(Tower(), source, chunk, 2, 0, tower=True)

    feats, missing = FeatureStore(store).rows("image_tower", fields, ids, compute, chunk_size=4)
    assert not finished & set(computed) and missing == len(computed) == 40 - len(finished)  # nothing finished is redone
    levels = torch.tensor([float(i) / 255.0 for i in range(40)])
    torch.testing.assert_close(feats.values, levels[:, None].expand(40, 3))  # nothing lost, every row its own image's
    stored = [i for p in pool.glob("chunk-*.safetensors") for i in FeatureStore(store).load_path(p, fields).ids]
    assert sorted(stored) == sorted(ids)  # every id once on disk
    assert all(f".{pid}.tmp" in t.name for t in store.rglob("*.tmp"))  # at most the dead run's half-written file
