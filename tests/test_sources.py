"""Sources built from generated data shaped like the real layouts (class folders, a flat folder
with a regex, CoOp's JSON, a local Parquet dataset), the paper's five datasets' class names and
templates resolved through them, and the bad-image corpus reported with counts that reconcile."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import BAD_REASONS, good_images, png_bytes, write_corpus
from PIL import Image

from siglip_adapter import stages
from siglip_adapter.cli import scan_source
from siglip_adapter.config import load_config
from siglip_adapter.data import make_manifest
from siglip_adapter.prompts import class_prompts
from siglip_adapter.sources import build_source
from siglip_adapter.sources.base import clean_classnames
from siglip_adapter.sources.images import open_rgb

TINY = png_bytes(Image.new("RGB", (6, 6), (90, 120, 200)))


def write_tree(root, files: dict[str, bytes] | list[str]):
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[rel] if isinstance(files, dict) else TINY)
    return root


def paper_cfg(project, slug: str, **dataset) -> dict:
    """params/<slug>.yaml with its dataset section pointed at generated data."""
    cfg = load_config(slug, root=project)
    d = {k: v for k, v in cfg["dataset"].items() if k != "kaggle"}
    cfg["dataset"] = {**d, **dataset}
    return cfg


AUTHORS_MOUNTS = {"oxford_pets": "oxford", "caltech101": "caltech-101", "food101": "food101", "eurosat": "eurosat-dataset",
                  "dtd": "dtd-data"}  # where the authors' scripts found each input: /kaggle/input/<this>


def kaggle_layout(project, slug: str, data_root, **extra) -> dict:
    """The folder layout the authors' Kaggle inputs have (``dataset.kaggle``, its root relative to
    the mounted input), mounted at ``data_root/<the authors' input>`` instead of /kaggle/input."""
    k = {key: v for key, v in load_config(slug, root=project)["dataset"]["kaggle"].items() if key != "dataset_source"}
    return paper_cfg(project, slug, **{**k, "root": str(data_root / AUTHORS_MOUNTS[slug] / k["root"]), **extra})


def hf_parquet(folder, splits: dict[str, list[tuple[bytes, int]]], names: list[str]):
    """A local dataset laid out as the hub lays it: data/<split>-00000-of-00001.parquet."""
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    for split, rows in splits.items():
        ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b, _ in rows], "label": [lab for _, lab in rows]},
                                        features=feats)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


# ---------------------------------------------------------------------------------------------
# The paper's five datasets


def test_oxford_pets_flat_folder_regex_and_official_split(tmp_path, root):
    names = ["Abyssinian", "Great_Pyrenees", "american_bulldog"]
    base = tmp_path / "oxford" / "oxfordpets"
    write_tree(base / "images", [f"{n}_{i}.jpg" for n in names for i in range(1, 7)] + ["Abyssinian_1.mat"])
    (base / "annotations").mkdir()
    (base / "annotations" / "trainval.txt").write_text("".join(f"{n}_{i} 1 1 1\n" for n in names for i in range(1, 5)))
    (base / "annotations" / "test.txt").write_text("".join(f"{n}_{i} 1 1 1\n" for n in names for i in range(5, 7)))
    cfg = kaggle_layout(root, "oxford_pets", tmp_path)
    src = build_source(cfg)
    assert src.classnames == ["abyssinian", "great pyrenees", "american bulldog"]
    assert class_prompts(src.classnames, cfg["dataset"]["template"])[1] == "a photo of a great pyrenees, a type of pet."
    assert src.ids[0] == "Abyssinian_1.jpg" and src.found == 18  # the .mat file is no image candidate
    m = make_manifest(src, None, cfg["split"]["fractions"], 0, method="official", val_from_train=0.25)
    test = set(m.loc[m["split"] == "test", "image_id"])
    assert test == {f"{n}_{i}.jpg" for n in names for i in (5, 6)}
    assert (m.groupby(["label", "split"]).size().unstack()[["train", "val"]].values == [[3, 1]] * 3).all()


def test_caltech101_drops_and_renames_from_class_folders(tmp_path, root):
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"]
    write_tree(tmp_path / "caltech-101" / "caltech-101" / "101_ObjectCategories",
               [f"{c}/image_{i:04d}.jpg" for c in folders for i in range(1, 5)])
    cfg = kaggle_layout(root, "caltech101", tmp_path)
    src = build_source(cfg)
    assert src.classnames == ["face", "leopard", "motorbike", "accordion", "airplane"]
    assert not any(i.startswith(("BACKGROUND_Google/", "Faces_easy/")) for i in src.ids) and len(src.ids) == 20
    assert class_prompts(src.classnames, cfg["dataset"]["template"])[0] == "a photo of a face."


def test_caltech101_through_a_coop_split_file(tmp_path, root):
    classes = [("Faces", "face"), ("airplanes", "airplane"), ("Leopards", "leopard"), ("Motorbikes", "motorbike")]
    write_tree(tmp_path / "caltech", [f"{c}/image_000{i}.jpg" for c, _ in classes for i in range(1, 4)])
    # CoOp's files carry the already-cleaned names; the same class map must leave them as they are.
    split = {s: [[f"{c}/image_000{i}.jpg", lab, name] for lab, (c, name) in enumerate(classes)]
             for s, i in (("train", 1), ("val", 2), ("test", 3))}
    (tmp_path / "split_zhou_Caltech101.json").write_text(json.dumps(split))
    cfg = paper_cfg(root, "caltech101", source="coop", root=str(tmp_path / "caltech"), split_file=str(tmp_path / "split_zhou_Caltech101.json"))
    src = build_source(cfg)
    assert src.classnames == ["face", "airplane", "leopard", "motorbike"] and src.kind == "coop"
    m = make_manifest(src, None, cfg["split"]["fractions"], 0, method="coop")
    assert m.set_index("image_id")["split"].to_dict() == {f"{c}/image_000{i}.jpg": s for c, _ in classes
                                                          for s, i in (("train", 1), ("val", 2), ("test", 3))}
    with pytest.raises(ValueError, match="needs a source with its own splits"):  # a plain folder has none
        make_manifest(build_source({"dataset": {"source": "folder", "root": str(tmp_path / "caltech")}}), None, cfg["split"]["fractions"], 0,
                      method="coop")


def test_food101_local_parquet_names_from_the_label_feature(tmp_path, root):
    names = ["apple_pie", "baby_back_ribs"]
    folder = hf_parquet(tmp_path / "food101", {"train": [(TINY, lab) for lab in (0, 1) for _ in range(4)],
                                               "validation": [(TINY, lab) for lab in (0, 1) for _ in range(2)]}, names)
    cfg = paper_cfg(root, "food101", hub_id=str(folder))
    src = build_source(cfg)
    assert src.kind == "hf" and src.classnames == ["apple pie", "baby back ribs"]
    assert class_prompts(src.classnames, cfg["dataset"]["template"]) == ["a photo of apple pie, a type of food.",
                                                                          "a photo of baby back ribs, a type of food."]
    m = make_manifest(src, None, cfg["split"]["fractions"], 0, method="official")
    assert set(m.loc[m["split"] == "test", "image_id"].str.split("/").str[0]) == {"validation"}  # the hub's name for Food-101's test
    assert np.asarray(src.open(src.ids[0])).shape == (6, 6, 3)


def test_eurosat_renames_and_csv_splits(tmp_path, root):
    classes = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop", "Residential",
               "River", "SeaLake"]
    base = tmp_path / "eurosat-dataset" / "EuroSAT"
    write_tree(base, [f"{c}/{c}_{i}.jpg" for c in classes for i in range(1, 4)])
    for n, split in enumerate(("train", "validation", "test"), start=1):
        rows = "".join(f"{k},{c}/{c}_{n}.jpg,{lab},{c}\n" for k, (lab, c) in enumerate(enumerate(classes)))
        (base / f"{split}.csv").write_text(",Filename,Label,ClassName\n" + rows)
    cfg = kaggle_layout(root, "eurosat", tmp_path)
    src = build_source(cfg)
    assert src.classnames == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
                              "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]
    assert class_prompts(src.classnames, cfg["dataset"]["template"])[-1] == "a centered satellite photo of Sea or Lake."
    assert dict(zip(src.ids, src.splits))["Forest/Forest_2.jpg"] == "val"


def test_dtd_class_folders(tmp_path, root):
    write_tree(tmp_path / "dtd-data" / "dtd" / "images", [f"{c}/{c}_{i:04d}.jpg" for c in ("banded", "polka-dotted") for i in range(3)])
    cfg = kaggle_layout(root, "dtd", tmp_path)
    src = build_source(cfg)
    assert class_prompts(src.classnames, cfg["dataset"]["template"]) == ["banded texture.", "polka-dotted texture."]


def test_kaggle_layout_is_used_inside_a_kernel(tmp_path, root, monkeypatch):
    from siglip_adapter.sources import effective_dataset

    d = load_config("dtd", root=root)["dataset"]
    monkeypatch.setenv("SIGLIP_ADAPTER_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert effective_dataset(d)["source"] == "hf"  # not in a kernel here
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    mount = tmp_path / "input" / "datasets" / "jmexpert" / "describable-textures-dataset-dtd"
    mount.mkdir(parents=True)
    assert effective_dataset(d)["source"] == "folder" and effective_dataset(d)["root"] == str(mount / "dtd" / "images")


def test_a_class_map_typo_is_an_error():
    with pytest.raises(ValueError, match="Airplanez"):
        clean_classnames(["airplanes", "Faces"], {"class_map": {"Airplanez": "airplane"}})


# ---------------------------------------------------------------------------------------------
# Ids and splits that do not depend on listing order


def test_folder_ids_are_sorted_relative_paths_and_manifest_ignores_listing_order(tmp_path):
    write_tree(tmp_path / "t", ["b/2.png", "a/1.png", "b/1.png", "a/3.png", "a/2.png", "b/3.png"])
    src = build_source({"dataset": {"source": "folder", "root": str(tmp_path / "t")}})
    assert src.ids == ["a/1.png", "a/2.png", "a/3.png", "b/1.png", "b/2.png", "b/3.png"]
    shuffled = build_source({"dataset": {"source": "folder", "root": str(tmp_path / "t")}})
    order = np.random.default_rng(1).permutation(len(shuffled.ids))
    shuffled.ids, shuffled.labels = [shuffled.ids[i] for i in order], shuffled.labels[order]
    fr = {"train": 0.34, "val": 0.33, "test": 0.33}
    assert make_manifest(src, None, fr, 5).equals(make_manifest(shuffled, None, fr, 5))


# ---------------------------------------------------------------------------------------------
# Bad images


def test_every_mode_loads_as_rgb():
    for name, data in good_images().items():
        im = open_rgb(data)
        assert im.mode == "RGB", name
    grey16 = np.asarray(open_rgb(good_images()["grey16.png"]))
    assert grey16.max() == grey16.min() == 128  # 32768 of 65535 is mid grey, not clipped to white


@pytest.fixture
def corpus_tree(tmp_path):
    write_tree(tmp_path / "tree", [f"good/{n}.png" for n in range(6)])
    good, bad = write_corpus(tmp_path / "tree" / "mixed")
    return tmp_path / "tree", good, bad


def test_bad_images_in_a_folder_are_reported_with_reasons(corpus_tree):
    root, good, bad = corpus_tree
    src = build_source({"dataset": {"source": "folder", "root": str(root)}})
    report = scan_source(src, num_workers=0)
    reasons = {r["path"].split("/", 1)[1]: r["reason"] for r in report["skipped"]}
    assert sorted(reasons) == sorted(bad)
    for name, word in BAD_REASONS.items():
        assert word in reasons[name], (name, reasons[name])
    assert "unreadable" in reasons["broken-link.jpg"]
    assert report["found"] == 6 + len(good) + len(bad) and report["found"] == report["used"] + len(report["skipped"])


def test_bad_images_in_a_local_parquet_dataset_are_reported(tmp_path):
    from helpers import bad_images

    rows = [(b, 0) for b in good_images().values()] + [(b, 1) for b in bad_images().values()]
    folder = hf_parquet(tmp_path / "ds", {"train": rows}, ["fine", "broken"])
    src = build_source({"dataset": {"source": "hf", "hub_id": str(folder)}})
    report = scan_source(src, num_workers=0)
    assert report["found"] == len(rows) == report["used"] + len(report["skipped"])
    assert len(report["skipped"]) == len(bad_images())
    got = sorted(r["reason"].split(" ")[0] for r in report["skipped"])
    assert got == sorted(["truncated", "empty", "not", "over"])


def test_manifest_leaves_bad_images_out_and_counts_reconcile(corpus_tree, tmp_path, root):
    from siglip_adapter.paths import RunPaths

    src_root, good, bad = corpus_tree
    cfg = load_config("digits", root=root)
    cfg["dataset"] = {"name": "corpus", "source": "folder", "root": str(src_root), "template": "a {}."}
    cfg.update(shots=[1, 2], n_seeds=3)
    cfg["data"].update(num_workers=0, max_skipped_fraction=0.5)
    paths = RunPaths(tmp_path / "out", "corpus").ensure()
    manifest = stages.split.build_manifest(cfg, paths, build_source(cfg))
    report = json.loads(paths.data_report.read_text())
    skipped = pd.read_csv(paths.skipped)
    assert report["found"] == report["used"] + report["skipped"] == 6 + len(good) + len(bad)
    assert report["skipped"] == len(skipped) and {"mixed/empty.jpg", "mixed/broken-link.jpg"} <= set(skipped["path"])
    read = stages.split.ids_to_read(manifest, cfg)
    assert not set(read) & {f"mixed/{b}" for b in bad}  # nothing a stage reads is bad
    cfg["data"]["max_skipped_fraction"] = 0.1
    with pytest.raises(stages.split.TooManySkipped, match=rf"{src_root}: \d+ of {report['found']} images are unusable"):
        stages.split.build_manifest(cfg, paths, build_source(cfg))


def test_scan_cli_json(corpus_tree):
    root, good, bad = corpus_tree
    out = subprocess.run([sys.executable, "-m", "siglip_adapter.cli", "scan", str(root), "--json", "--workers", "0"],
                         capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert set(report) == {"found", "used", "skipped"} and all(set(r) == {"path", "reason"} for r in report["skipped"])
    assert len(report["skipped"]) == len(bad) and report["found"] == report["used"] + len(bad)
    assert out.returncode == 1  # 5 bad of 19 is above the default 5%
    ok = subprocess.run([sys.executable, "-m", "siglip_adapter.cli", "scan", str(root / "good"), "--regex", r"^(?P<class>\d)\.png$",
                         "--workers", "0"], capture_output=True, text=True)
    assert ok.returncode == 0 and "6 images found, 6 usable, 0 skipped" in ok.stdout
    missing = subprocess.run([sys.executable, "-m", "siglip_adapter.cli", "scan", str(root / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_the_images_fingerprint_sees_content_not_timestamps(tmp_path, monkeypatch):
    """``fingerprint``: an edited, added or removed image changes the digest; a file
    touched without a change does not; a file is hashed once per version (size, mtime)."""
    from siglip_adapter import fingerprint as fp

    write_tree(tmp_path / "imgs", ["a/1.png", "a/2.png", "b/1.png"])
    d = {"source": "folder", "root": str(tmp_path / "imgs")}
    hashed = []
    real = fp._sha256
    monkeypatch.setattr(fp, "_sha256", lambda p: hashed.append(p) or real(p))
    state = {}
    first = fp.fingerprint(d, state)
    assert first["files"] == 3 and len(hashed) == 3
    assert fp.fingerprint(d, state) == first and len(hashed) == 3  # unchanged: nothing re-read
    image = tmp_path / "imgs" / "a" / "1.png"
    image.touch()
    assert fp.fingerprint(d, state)["sha256"] == first["sha256"]  # touched: re-read, same content
    Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6)).save(image)  # rotating a uniform image would change nothing
    rotated = fp.fingerprint(d, state)
    assert rotated["sha256"] != first["sha256"]
    (tmp_path / "imgs" / "b" / "2.png").write_bytes(TINY)
    added = fp.fingerprint(d, state)
    assert added["files"] == 4 and added["sha256"] not in (first["sha256"], rotated["sha256"])
    (tmp_path / "imgs" / "b" / "2.png").rename(tmp_path / "imgs" / "a" / "3.png")  # same bytes, another class
    assert fp.fingerprint(d, state)["sha256"] != added["sha256"]
    hub = fp.fingerprint({"source": "hf", "hub_id": "someone/some-set", "revision": "abc"})
    assert hub["files"] == 0 and hub["hub"] == ["someone/some-set@abc"]


LISTED = '''
"""``listed``: a CSV of ``path,class`` lines over an image root (a test's new kind of source)."""

from siglip_adapter.sources.base import FileSource, finish, resolve_root


def listed_source(d):
    root = resolve_root(d)
    rows = [line.split(",") for line in (root / "list.csv").read_text().split()]
    return FileSource(**finish("listed", str(root), [(path, cls, None) for path, cls in rows], d))
'''


def test_a_new_kind_of_source_is_one_module(tmp_path, monkeypatch):
    """README, "Add a source": a module ``<kind>.py`` in ``siglip_adapter/sources`` with
    ``<kind>_source(d)`` is a kind of source; nothing else names it (here the module lies in a
    temporary folder added to the package's path)."""
    from siglip_adapter import sources
    from siglip_adapter.data import make_manifest

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "listed.py").write_text(LISTED)
    monkeypatch.setattr(sources, "__path__", [*sources.__path__, str(tmp_path / "pkg")])
    root = tmp_path / "images"
    lines = []
    for cls in ("cat", "dog"):
        for n in range(6):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * n, 0, 0)).save(root / cls / f"{n}.png")
            lines.append(f"{cls}/{n}.png,{cls}")
    (root / "list.csv").write_text("\n".join(lines))
    assert "listed" in sources._kinds()
    source = sources.build_source({"dataset": {"name": "pets", "source": "listed", "root": str(root)}})
    assert source.kind == "listed" and source.classnames == ["cat", "dog"] and len(source.ids) == 12
    assert source.open(source.ids[0]).size == (8, 8)
    manifest = make_manifest(source, None, {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    assert set(manifest["split"]) == {"train", "val", "test"} and manifest.groupby("classname").size().tolist() == [6, 6]
