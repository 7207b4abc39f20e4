"""The hub profile end to end on tiny local models with the real architectures and tokenizer /
processor classes (SigLIP + SentencePiece, SmolVLM's Idefics3 + chat template, T5): the six
notebooks, executed by papermill as `dvc repro` runs them, on a small generated image folder,
from captions to Table I, on two backbones (the tiny SigLIP and the offline ConSE encoder). The
numbers mean nothing; the wiring is what is proven."""

import json

import pandas as pd
import pytest

NOTEBOOKS = ["01_captions", "02_embed", "03_zero_shot", "04_adapter", "05_trainable", "06_analysis"]
BACKBONES = ["tiny-siglip", "offline-conse"]  # the tiny_hub overlay's own, and the offline profile's


@pytest.fixture(scope="module")
def executed(hub_project):
    import os

    import papermill

    env = {"SIGLIP_ADAPTER_ROOT": str(hub_project), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        out = hub_project / "executed"
        out.mkdir()
        runs = [(nb, {"dataset": "shapes", "backbone": bb}, f"{nb}-{bb}" if bb != BACKBONES[0] else nb)
                for bb in BACKBONES for nb in NOTEBOOKS[:-1]] + [("06_analysis", {"datasets": "shapes", "backbones": ",".join(BACKBONES)},
                                                                  "06_analysis")]
        for nb, params, name in runs:
            papermill.execute_notebook(str(hub_project / "notebooks" / f"{nb}.ipynb"), str(out / f"{name}.ipynb"),
                                       parameters={"overlay": "tiny_hub", **params}, kernel_name="python3", cwd=str(hub_project),
                                       progress_bar=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return hub_project / "build" / "tiny_hub"


def test_hub_profile_runs_from_captions_to_table1(executed):
    caps = pd.read_parquet(executed / "cache" / "shapes" / "tiny-siglip" / "corrected" / "captions.parquet")
    assert caps["captioner"].unique().tolist() == ["build/tiny-models/smolvlm"]
    assert caps["summariser"].unique().tolist() == ["build/tiny-models/t5"]
    assert (caps["n_tokens"] <= 64).all() and caps["image_id"].is_unique
    index = json.loads((executed / "cache" / "shapes" / "tiny-siglip" / "corrected" / "features.json").read_text())
    assert index["image"]["fields"]["model_id"] == "build/tiny-models/siglip"
    assert index["image"]["fields"]["text_attention_mask"] is False and index["image"]["fields"]["precision"] == "fp32"
    table = pd.read_csv(executed / "results" / "table1.csv")
    ours = table[table["dataset"] == "shapes"]
    assert {"zero_shot", "zero_shot_captions", "linear_probe", "tip_adapter", "tip_adapter_f", "clip_adapter", "gda", "idea", "coop",
            "adapter", "trainable"} <= set(ours["method"])  # CoOp trained through the tiny SigLIP's text tower
    assert ours["mean"].between(0, 1).all() and set(ours.loc[ours["method"] == "adapter", "shots"]) == {1, 2}
    report = json.loads((executed / "results" / "runs" / "shapes" / "tiny-siglip" / "corrected" / "data.json").read_text())
    assert report["found"] == report["used"] == 36 and report["skipped"] == 0
    # tiny_hub's shards.processes: 2 made 01_captions and 02_embed launch two processes, whose
    # shares the notebooks show; the notebooks then found every caption and feature made.
    for nb, kind in (("01_captions", "caption parts"), ("02_embed", "image_tower chunks")):
        cells = json.loads((executed.parent.parent / "executed" / f"{nb}.ipynb").read_text())["cells"]
        text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
        assert "2 processes" in text and "process 1 of 2" in text and "process 2 of 2" in text and kind in text, text[-2000:]


def test_a_run_on_two_backbones_makes_table1_with_a_backbone_column(executed):
    """The tiny SigLIP and ConSE ran the same dataset and protocol: Table I holds both, apart, with
    every method each; each run keyed its features and limited its captions by its own encoder;
    06_analysis drew each method's gain over its own backbone's zero-shot."""
    table = pd.read_csv(executed / "results" / "table1.csv")
    ours = table[table["dataset"] == "shapes"]
    assert "backbone" in table.columns and set(ours["backbone"]) == set(BACKBONES)
    methods = {bb: set(ours[ours["backbone"] == bb]["method"]) for bb in BACKBONES}
    assert methods["tiny-siglip"] == methods["offline-conse"] and {"zero_shot", "adapter", "trainable", "coop"} <= methods["offline-conse"]
    assert "| shapes | offline-conse | corrected |" in (executed / "results" / "table1.md").read_text()
    fields = {bb: json.loads((executed / "cache" / "shapes" / bb / "corrected" / "features.json").read_text())["image"]["fields"]
              for bb in BACKBONES}
    assert fields["tiny-siglip"]["encoder"] == "siglip" and fields["offline-conse"]["encoder"] == "offline-conse"
    gains = pd.read_csv(executed / "results" / "backbone_gains.csv")
    assert set(gains["backbone"]) == set(BACKBONES) and (executed / "results" / "figures" / "backbone_gains.png").stat().st_size > 0
    for bb in BACKBONES:
        zs = ours[(ours["backbone"] == bb) & (ours["method"] == "zero_shot")]["mean"].iloc[0]
        g = gains[gains["backbone"] == bb].set_index("method")
        top = ours[(ours["backbone"] == bb) & (ours["method"] == "adapter") & (ours["shots"] == 2)]["mean"].iloc[0]
        assert g.loc["adapter", "gain"] == pytest.approx(100 * (top - zs))
        caps = pd.read_parquet(executed / "cache" / "shapes" / bb / "corrected" / "captions.parquet")
        assert (caps["n_tokens"] <= 64).all()  # both encoders' own text length (SigLIP's; ConSE stands in for it)


def test_the_best_method_saves_as_a_card_that_predict_applies(executed, hub_project, monkeypatch, tmp_path):
    """`siglip-adapter card` refits the run's best 2-shot method (checked against its stage row) and
    `siglip-adapter predict` loads the tiny SigLIP once and writes a row per image and card."""
    from siglip_adapter import cli

    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(hub_project))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["card", "shapes", "--overlay", "tiny_hub", "--out", str(tmp_path / "cards")]) == 0
    (card,) = sorted((tmp_path / "cards").glob("*.json"))
    body = json.loads(card.read_text())
    rows = pd.concat([pd.read_csv(executed / "results" / "runs" / "shapes" / "tiny-siglip" / "corrected" / f"{s}.csv") for s in ("04_adapter", "05_trainable")])
    top = rows[rows["shots"] == 2]["val_accuracy"].max()
    assert body["shots"] == 2 and body["val_accuracy"] == pytest.approx(top) and body["backbone"]["model_id"] == "build/tiny-models/siglip"
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", "--card", str(card), str(hub_project / "data" / "shapes" / "circle"), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == 12 and set(pred["class"]) <= {"circle", "square", "triangle"} and (pred["method"] == body["method"]).all()


@pytest.mark.parametrize("name", ["siglip", "t5", "smolvlm"])
def test_tiny_tokenizers_use_their_trained_vocabulary(hub_project, name):
    """Each tiny tokenizer maps plain words to real pieces (not all to <unk>) and decodes them back."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hub_project / "build" / "tiny-models" / name)
    ids = tok("a photo of a dog", add_special_tokens=False)["input_ids"]
    assert len(tok) >= 300 and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a photo of a dog"


def test_hub_paper_protocol_captions_as_the_authors_did(hub_project):
    """The paper's caption switches on the real classes: the class in the prompt, beam search with
    the whole sequence decoded (the chat prompt stays in the raw caption), T5 forced to a minimum
    length; then the features of the run are embedded."""
    import os

    import papermill

    env = {"SIGLIP_ADAPTER_ROOT": str(hub_project), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for nb in ("01_captions", "02_embed"):
            papermill.execute_notebook(str(hub_project / "notebooks" / f"{nb}.ipynb"), str(hub_project / f"paper-{nb}.ipynb"),
                                       parameters={"dataset": "shapes", "overlay": "tiny_hub", "protocol": "paper"},
                                       kernel_name="python3", cwd=str(hub_project), progress_bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    run = hub_project / "build" / "tiny_hub"
    caps = pd.read_parquet(run / "cache" / "shapes" / "tiny-siglip" / "paper" / "captions.parquet")
    manifest = pd.read_parquet(run / "results" / "runs" / "shapes" / "tiny-siglip" / "paper" / "manifest.parquet").set_index("image_id")
    assert len(caps) == 3  # one seed-42 1-shot set of three classes: only the shots are captioned
    for row in caps.itertuples():
        cls = manifest.loc[row.image_id, "classname"]
        assert row.prompt.startswith(f"This is a photo of a {cls}.") and f"This is a photo of a {cls}." in row.raw
        assert row.raw.startswith("User:")  # the chat prompt decoded into the caption
    assert set(caps["decoding"]) == {"beam4"} and set(caps["summariser_min_new_tokens"]) == {64}
    assert set(caps["summariser_num_beams"]) == {4} and set(manifest["split_method"]) == {"shuffled"}
    index = json.loads((run / "cache" / "shapes" / "tiny-siglip" / "paper" / "features.json").read_text())
    assert index["image"]["fields"]["mean"] == [0.485, 0.456, 0.406] and index["image"]["fields"]["resample"] == "bilinear"


@pytest.mark.parametrize("splitting", [False, True])
def test_image_splitting_is_a_parameter_that_reaches_the_processor(hub_project, monkeypatch, splitting):
    """``captions.vlm_image_splitting`` (off by default) is what SmolVLM's processor is built with,
    and it is part of the captions' settings (so of their cache key)."""
    from siglip_adapter.captions.captioners import build_captioner
    from siglip_adapter.config import load_config
    from siglip_adapter.encoders import build_encoder

    monkeypatch.setenv("SIGLIP_ADAPTER_ROOT", str(hub_project))
    cfg = load_config("shapes", "tiny_hub", root=hub_project)
    assert cfg["captions"]["vlm_image_splitting"] is False
    cfg["captions"]["vlm_image_splitting"] = splitting
    cap = build_captioner(cfg, build_encoder(cfg))
    assert cap.processor.image_processor.do_image_splitting is splitting and cap.settings()["image_splitting"] is splitting
