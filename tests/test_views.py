"""Augmented shot views (``shot_views``, lib/siglip_adapter/views.py): the crops are seeded per
image and view and stay inside the image with the stated area and aspect; the feature store keeps
the views of the shot images alone, computed once; each method takes them as its ``views``
parameter says, and with ``shot_views.n`` 0 nothing changes."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from siglip_adapter import captions, encoders, stages
from siglip_adapter.config import ConfigError, load_config
from siglip_adapter.inputs import load_inputs
from siglip_adapter.methods import loop
from siglip_adapter.methods.loop import Labelled, Task
from siglip_adapter.paths import RunPaths
from siglip_adapter.sources import build_source
from siglip_adapter.views import ViewSource, augment, crop_box, split_view_id, view_ids

SETTINGS = {"n": 3, "scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "flip": 0.5, "seed": 0}


@pytest.mark.parametrize("size", [(28, 28), (64, 40), (300, 200), (7, 90)])
def test_a_crop_lies_inside_the_image_with_the_stated_area_and_aspect(size):
    width, height = size
    inside = 0
    for s in range(300):
        left, top, w, h = crop_box(width, height, np.random.default_rng(s), SETTINGS["scale"], SETTINGS["ratio"])
        assert 0 <= left and 0 <= top and 0 < w and 0 < h and left + w <= width and top + h <= height
        fallback = (left, top) == ((width - w) // 2, (height - h) // 2) and (w == width or h == height)
        if not fallback:  # a sampled crop: its area and aspect within the settings (up to the rounding to pixels)
            inside += 1
            assert 0.5 * width * height * 0.8 - 2 * (w + h) <= w * h <= width * height
            assert 0.75 * 0.8 <= w / h <= 4 / 3 * 1.25
    assert inside > 0 or width / height > 4 or height / width > 4


def test_an_image_too_narrow_for_any_ratio_gets_the_central_crop_at_the_nearest_ratio():
    left, top, w, h = crop_box(10, 100, np.random.default_rng(0), [0.9, 1.0], [0.75, 4 / 3])
    assert (w, h) == (10, 13) and (left, top) == (0, 43)


def test_views_are_the_same_for_the_same_seed_image_and_index_and_differ_otherwise():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    a = np.asarray(augment(im, "x/1.png", 2, SETTINGS))
    assert np.array_equal(a, np.asarray(augment(im, "x/1.png", 2, SETTINGS)))
    others = [augment(im, "x/1.png", 3, SETTINGS), augment(im, "x/2.png", 2, SETTINGS), augment(im, "x/1.png", 2, {**SETTINGS, "seed": 1})]
    assert all(o.size != im.size or not np.array_equal(a, np.asarray(o)) for o in others)
    flips = [augment(im, "x/1.png", j, {**SETTINGS, "scale": [1.0, 1.0], "ratio": [4 / 3, 4 / 3]}) for j in range(40)]
    flipped = sum(np.array_equal(np.asarray(f), np.asarray(im)[:, ::-1]) for f in flips)
    assert all(f.size == im.size for f in flips) and 8 < flipped < 32  # whole image, flipped about half the time


def test_view_ids_and_the_view_source():
    assert view_ids(["a", "b#c"], 2) == ["a#v0", "b#c#v0", "a#v1", "b#c#v1"]
    assert split_view_id("b#c#v1") == ("b#c", 1)
    with pytest.raises(ValueError, match="'a' is not a view id"):
        split_view_id("a")

    class Source:
        root = "imgs"

        def open(self, i):
            return Image.new("RGB", (32, 24), (int(i), 0, 0))

        def path_of(self, i):
            return f"{i}.png"

    src = ViewSource(Source(), SETTINGS)
    assert src.root == "imgs" and src.path_of("7#v2") == "7.png (view 2)"
    assert np.asarray(src.open("7#v2"))[0, 0, 0] == 7


def test_a_method_takes_the_views_as_its_parameter_says():
    g = torch.Generator().manual_seed(0)
    views = F.normalize(torch.randn(3, 4, 5, generator=g), dim=-1)
    shots = Labelled(views[0] * 0, torch.randn(4, 5, generator=g), torch.tensor([0, 0, 1, 1]))
    task = Task(shots, shots, torch.eye(2, 5), views=views)
    mean = task.viewed("mean").shots
    torch.testing.assert_close(mean.images, F.normalize(views.sum(0), dim=-1))
    samples = task.viewed("samples").shots
    assert torch.equal(samples.images, views.reshape(12, 5)) and samples.labels.tolist() == [0, 0, 1, 1] * 3
    assert torch.equal(samples.captions, shots.captions.repeat(3, 1))
    assert torch.equal(task.viewed("first").shots.images, views[0])
    assert task.viewed("none") is task and Task(shots, shots, torch.eye(2, 5)).viewed("mean").shots is shots
    with pytest.raises(ValueError, match="views: 'all'"):
        task.viewed("all")


@pytest.mark.parametrize("change,words", [({"scale": [0.9, 0.5]}, "scale must be [low, high]"), ({"n": -1}, "shot_views.n"),
                                          ({"views": 3}, "unknown parameter 'shot_views.views'")])
def test_the_view_settings_are_checked(root, tmp_path, change, words):
    import shutil

    import yaml

    shutil.copytree(root / "params", tmp_path / "params")
    ds = yaml.safe_load((tmp_path / "params" / "fashion_mnist.yaml").read_text())
    (tmp_path / "params" / "bad.yaml").write_text(yaml.safe_dump({**ds, "shot_views": change}))
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config("bad", root=tmp_path)
    bad_use = {**ds, "methods": {**ds.get("methods", {}), "gda": {"views": "all"}}}
    (tmp_path / "params" / "bad.yaml").write_text(yaml.safe_dump(bad_use))
    with pytest.raises(ConfigError, match=r"methods.gda.views"):
        load_config("bad", root=tmp_path)


@pytest.fixture(scope="module")
def viewed_run(root, tmp_path_factory):
    """The smoke run of fashion_mnist embedded with 2 views of each shot image, then again."""
    cfg = load_config("fashion_mnist", "smoke", root=root, protocol="corrected")
    cfg["shot_views"]["n"] = 2
    paths = RunPaths(tmp_path_factory.mktemp("views"), "fashion_mnist", "smoke", "corrected").ensure()
    source = build_source(cfg)
    manifest = stages.split.build_manifest(cfg, paths, source)
    enc = encoders.build_encoder(cfg)
    stages.captions.run_captions(cfg, paths, source, manifest, enc, captions.captioners.build_captioner(cfg, enc),
                                 captions.summarise.build_summariser(cfg))
    first = stages.embed.embed_all(cfg, paths, source, manifest, enc)
    again = stages.embed.embed_all(cfg, paths, source, manifest, enc)
    return cfg, paths, manifest, first, again


def test_the_store_keeps_two_views_of_each_shot_image_once(viewed_run):
    from siglip_adapter.config import seeds
    from siglip_adapter.data import shot_image_ids

    cfg, paths, manifest, first, again = viewed_run
    shots = shot_image_ids(manifest, max(cfg["shots"]), seeds(cfg))
    inp = load_inputs(paths, cfg)
    assert sorted(inp.views.ids) == sorted(view_ids(shots, 2)) and len(shots) < len(inp.image.ids)
    assert not first.set_index("kind").loc["view", "reused"] and again["reused"].all()
    v = inp.shot_views(2, seeds(cfg)[0], 2)
    images = inp.shots(2, seeds(cfg)[0])[0]
    assert v.shape == (2, *images.shape)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(v.shape[:2]))
    assert (v[0] - images).abs().max() > 1e-3 and (v[0] - v[1]).abs().max() > 1e-3  # views are not the image, nor each other


def test_views_change_the_methods_that_take_them_and_no_other(viewed_run):
    """Rows (accuracy, validation accuracy, choice) with 2 views against the same run with none."""
    cfg, paths, _, _, _ = viewed_run
    inp = load_inputs(paths, cfg)
    names = ["tip_adapter", "gda", "linear_probe", "adapter"]

    def rows(n):
        got = loop.method_rows(inp, {**cfg, "shot_views": {**cfg["shot_views"], "n": n}}, names)
        return got.set_index(["method", "shots", "seed"]).drop(columns=["search", "candidates"]).fillna("-").astype(str)

    changed = (rows(2) != rows(0)).any(axis=1).groupby("method").any()
    assert changed["tip_adapter"] and changed["gda"]  # views: mean, samples
    assert not changed["linear_probe"] and not changed["adapter"]  # views: none
