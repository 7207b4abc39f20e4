"""Saved adapters ("skill packs", siglip_adapter.cards) and `siglip-adapter predict`: a card
round-trips to identical predictions, a tampered, foreign or broken card is refused in one line,
a card's probabilities are calibrated on validation and flag images unlike every class, and
predict loads the backbone once, embeds each image once, applies every card and reports an
unreadable image without losing the others (real ConSE weights, real digits images)."""

import json

import pandas as pd
import pytest
import torch
from helpers import toy_run

from siglip_adapter.cards import CardError, calibration, card_for, class_probabilities, fit_temperature, load_card, save_card
from siglip_adapter.methods import registry
from siglip_adapter.methods.loop import Labelled, Task

PARAMS = {"zero_shot": {}, "linear_probe": {"C": [0.1, 10.0]}, "tip_adapter": {"search_scale": [7.0, 300.0], "search_step": [2, 2], "init_beta": 1.0, "init_alpha": 1.17},
          "idea": {"alpha": 0.5, "theta": [1.0, 5.0], "beta": [0.0, 1.0]}, "gda": {"alpha": [0.01, 1.0, 10.0]},
          "adapter": {"alpha": [0.0, 0.5], "theta": [1.0, 5.0], "beta": [0.0, 1.0]},
          "tip_adapter_f": {"lr": 0.01, "eps": 0.0001, "epochs": 5, "batch_size": 256,
                            "start": {"search_scale": [7.0, 300.0], "search_step": [2, 2], "init_beta": 1.0, "init_alpha": 1.17}},
          "clip_adapter_val": {"ratio": [0.2, 0.6], "reduction": 4, "logit_scale": 100.0, "lr": [0.01], "epochs": 5, "patience": 3,
                               "weight_decay": 0.01},
          "clip_adapter": {"ratio": 0.2, "reduction": 4, "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0005, "epochs": {1: 5}, "batch_size": 32,
                           "warmup_lr": 0.00001},
          "trainable": {"method": "ours", "lr": [0.01], "epochs": 5, "eval_every": 1, "patience": 3, "weight_decay": 0.01,
                        "start": {"alpha": [0.0, 0.5], "theta": [1.0, 5.0], "beta": [0.0, 1.0]}}}


def _card(fitted, **kw):
    return {"format": 1, "method": fitted.method, "backbone": {"encoder": "toy"}, "encoder": {}, "images": {"invert": False},
            "dataset": "toy", "protocol": "corrected", "classnames": ["a", "b", "c"], "prompts": ["a.", "b.", "c."], "shots": 2,
            "seed": 1, "hyper_parameters": fitted.chosen, "val_accuracy": fitted.val_accuracy, "test_accuracy": 0.5, **kw}


@pytest.mark.parametrize("name", list(PARAMS))
def test_a_card_round_trips_to_identical_predictions(tmp_path, name):
    inp, cfg, _ = toy_run()
    task = Task(Labelled(*inp.shots(2, 1)), Labelled(*inp.validation(cfg, 2, 1)), inp.class_text, 1.0, 0.0, 1)
    fitted = registry.get(name).fit(task, PARAMS[name])
    path = save_card(fitted, _card(fitted), tmp_path / f"{name}.json")
    card, loaded = load_card(path)
    x = inp.split("test")[0]
    assert torch.equal(loaded.logits(x), fitted.logits(x)) and loaded.chosen == fitted.chosen
    assert card["method"] == name and card["weights"] == f"{name}.safetensors" and len(card["weights_sha256"]) == 64


def test_a_tampered_or_unknown_card_is_refused(tmp_path):
    inp, cfg, _ = toy_run()
    task = Task(Labelled(*inp.shots(1, 1)), Labelled(*inp.validation(cfg, 1, 1)), inp.class_text)
    fitted = registry.get("zero_shot").fit(task, {})
    path = save_card(fitted, _card(fitted), tmp_path / "zs.json")
    weights = tmp_path / "zs.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # same size, other numbers
    with pytest.raises(CardError, match="SHA-256"):
        load_card(path)
    path = save_card(fitted, _card(fitted), tmp_path / "zs.json")
    card = json.loads(path.read_text())
    path.write_text(json.dumps({**card, "method": "prompt_soup"}))
    with pytest.raises(CardError, match="unknown method"):
        load_card(path)


@pytest.fixture(scope="module")
def digits_cards(tmp_path_factory, root):
    """Two cards (zero-shot and Tip-Adapter, 2 shots per class) fitted on real ConSE features of
    scikit-learn's digits, and a folder of one query image per class."""
    from siglip_adapter.cards import embed_files
    from siglip_adapter.config import load_config
    from siglip_adapter.encoders import build_encoder
    from siglip_adapter.prompts import class_prompts
    from kit_tools.digits import write_digits

    tmp = tmp_path_factory.mktemp("cards")
    write_digits(tmp / "digits")
    cfg = load_config("digits", root=root)
    encoder = build_encoder(cfg)
    names = [str(n) for n in range(10)]
    files = {n: sorted((tmp / "digits" / n).glob("*.png")) for n in names}
    pick = lambda lo, hi: [f for n in names for f in files[n][lo:hi]]  # noqa: E731
    labels = lambda per: torch.arange(10).repeat_interleave(per)  # noqa: E731
    shots, val = embed_files(encoder, pick(0, 2), True), embed_files(encoder, pick(2, 6), True)
    prompts = class_prompts(names, cfg["dataset"]["template"])
    task = Task(Labelled(shots, None, labels(2)), Labelled(val, None, labels(4)), encoder.encode_texts(prompts))
    queries = tmp / "queries"
    queries.mkdir()
    for f in pick(6, 7):
        (queries / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    cards, fits = [], []
    for name, params in (("zero_shot", {}), ("tip_adapter", {"search_scale": [7.0, 300.0], "search_step": [2, 3]})):
        fitted = registry.get(name).fit(task, params)
        card = card_for(fitted, cfg, encoder, names, prompts, 2, 1, float("nan"), task.val)
        cards.append(save_card(fitted, card, tmp / "cards" / f"{name}.json"))
        fits.append(fitted)
    return encoder, cards, fits, queries


def test_predict_loads_the_backbone_once_embeds_each_image_once_and_applies_every_card(digits_cards, tmp_path, monkeypatch):
    from siglip_adapter import encoders
    from siglip_adapter.cards import embed_files
    from siglip_adapter.cli import main

    encoder, cards, fits, queries = digits_cards
    built, embedded = [], []
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: built.append(cfg) or encoder)
    forward = encoder.encode_pixels
    monkeypatch.setattr(encoder, "encode_pixels", lambda px: embedded.append(len(px)) or forward(px))
    out = tmp_path / "pred.csv"
    assert main(["predict", "--card", str(cards[0]), "--card", str(cards[1]), str(queries), "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype={"class": str})
    images = sorted(queries.glob("*.png"))
    assert len(built) == 1 and sum(embedded) == len(images) == 10
    assert len(rows) == 2 * len(images) and set(rows["method"]) == {"zero_shot", "tip_adapter"}
    feats = embed_files(encoder, images, True)
    for card, fitted in zip(cards, fits):
        mine = rows[rows["card"] == str(card)]
        assert mine["image"].tolist() == [str(p) for p in images]
        assert mine["class"].tolist() == [str(int(i)) for i in fitted.logits(feats).argmax(-1)]
    # The shots help: Tip-Adapter's predictions are right more often than chance on these queries.
    right = rows.assign(truth=rows["image"].str.extract(r"/(\d)_[^/]*$")[0])
    assert (right.loc[right["method"] == "tip_adapter", "class"] == right.loc[right["method"] == "tip_adapter", "truth"]).mean() > 0.1


def test_predict_reports_unreadable_images_and_classifies_the_others(digits_cards, tmp_path, monkeypatch, capsys):
    import shutil

    from siglip_adapter import encoders
    from siglip_adapter.cli import main

    encoder, cards, _, queries = digits_cards
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: encoder)
    folder = tmp_path / "photos"
    shutil.copytree(queries, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--card", str(cards[0]), "--card", str(cards[1]), str(folder), "--out", str(out)]) == 1
    rows = pd.read_csv(out, dtype={"class": str, "error": str})
    bad = rows[rows["error"].notna()]
    assert len(rows) == 2 * 12 and len(bad) == 2 * 2 and rows["class"].notna().sum() == 2 * 10
    assert set(bad["image"].map(lambda p: p.rsplit("/", 1)[-1])) == {"broken.png", "empty.png"} and bad["class"].isna().all()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "broken.png: not an image" in err[0] and "empty.png: empty file" in err[1], err


def _predict_error(digits_cards, monkeypatch, capsys, card) -> str:
    from siglip_adapter import encoders
    from siglip_adapter.cli import main

    encoder, _, _, queries = digits_cards
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: encoder)
    assert main(["predict", "--card", str(card), str(queries)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


def test_predict_says_what_a_path_given_as_card_is(digits_cards, monkeypatch, capsys):
    cards = digits_cards[1]
    err = _predict_error(digits_cards, monkeypatch, capsys, cards[0].with_suffix(".safetensors"))
    assert "weights file" in err and f"({cards[0]})" in err
    err = _predict_error(digits_cards, monkeypatch, capsys, cards[0].parent)
    assert "a folder" in err and "tip_adapter.json" in err and "zero_shot.json" in err


@pytest.mark.parametrize("broken, words", [("{not json", "not JSON"), ({"weights_sha256": None}, "missing key 'weights_sha256'"),
                                           ({"classnames": None}, "missing key 'classnames'"), ({"format": 9}, "card format 9")])
def test_predict_names_the_file_and_key_of_a_broken_card(digits_cards, tmp_path, monkeypatch, capsys, broken, words):
    source = digits_cards[1][0]
    card = json.loads(source.read_text())
    text = broken if isinstance(broken, str) else json.dumps({k: v for k, v in {**card, **broken}.items() if v is not None})
    (tmp_path / "card.json").write_text(text)
    (tmp_path / source.with_suffix(".safetensors").name).write_bytes(source.with_suffix(".safetensors").read_bytes())
    err = _predict_error(digits_cards, monkeypatch, capsys, tmp_path / "card.json")
    assert str(tmp_path / "card.json") in err and words in err


def test_a_card_is_calibrated_on_validation_and_its_probabilities_sum_to_one(digits_cards, tmp_path, monkeypatch):
    from siglip_adapter import encoders
    from siglip_adapter.cli import main

    encoder, cards, fits, queries = digits_cards
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: encoder)
    out = tmp_path / "pred.json"
    assert main(["predict", "--card", str(cards[0]), "--card", str(cards[1]), str(queries), "--json", "--out", str(out)]) == 0
    assert "\\/" not in out.read_text()  # paths as written
    rows = pd.DataFrame(json.loads(out.read_text()))
    feats = query_features(encoder, queries)
    for card, fitted in zip(cards, fits):
        stored = json.loads(card.read_text())
        t = stored["calibration"]["temperature"]
        assert t > 0 and stored["calibration"]["fitted_on"] == "validation" and stored["calibration"]["n_images"] == 40
        probs = class_probabilities(fitted.logits(feats), t)
        torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs), dtype=probs.dtype))
        mine = rows[rows["card"] == str(card)]
        assert mine["probability"].tolist() == pytest.approx(probs.max(-1).values.tolist())
        assert mine["far_from_classes"].isin([True, False]).all()


def query_features(encoder, folder):
    from siglip_adapter.cards import embed_files

    return embed_files(encoder, sorted(folder.glob("*.png")), True)


def test_the_fitted_temperature_undoes_a_known_overconfidence():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    labels = torch.multinomial(z.softmax(-1), 1, generator=g)[:, 0]  # labels drawn from softmax(z): calibrated at T = 1
    assert fit_temperature(z * 3, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z / 4, labels) == pytest.approx(0.25, rel=0.1)


def test_an_image_unlike_every_class_is_far_from_the_classes():
    inp, cfg, _ = toy_run()
    task = Task(Labelled(*inp.shots(2, 1)), Labelled(*inp.validation(cfg, 2, 1)), inp.class_text, 1.0, 0.0, 1)
    fitted = registry.get("tip_adapter").fit(task, PARAMS["tip_adapter"])
    cal = calibration(fitted.logits(task.val.images), task.val.labels)
    far = cal["far_from_classes"]
    top = lambda x: class_probabilities(fitted.logits(x), cal["calibration"]["temperature"]).max(-1).values  # noqa: E731
    # A feature orthogonal to every class prompt and shot: equally (un)like each class.
    keys = torch.cat([inp.class_text, task.shots.images])
    odd = torch.randn(1, keys.shape[1], generator=torch.Generator().manual_seed(3))
    odd = torch.nn.functional.normalize(odd - (odd @ torch.linalg.pinv(keys)) @ keys, dim=-1)
    assert far["quantile"] == 0.01 and far["fitted_on"] == "validation"
    assert bool(top(odd)[0] < far["threshold"]) and float((top(inp.split("test")[0]) < far["threshold"]).float().mean()) <= 0.1


def test_an_older_card_without_calibration_still_predicts(digits_cards, tmp_path, monkeypatch, capsys):
    from siglip_adapter import encoders
    from siglip_adapter.cli import main

    encoder, cards, _, queries = digits_cards
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: encoder)
    card = {k: v for k, v in json.loads(cards[1].read_text()).items() if k not in ("calibration", "far_from_classes")}
    (tmp_path / "old.json").write_text(json.dumps(card))
    (tmp_path / "tip_adapter.safetensors").write_bytes(cards[1].with_suffix(".safetensors").read_bytes())
    out = tmp_path / "pred.csv"
    assert main(["predict", "--card", str(tmp_path / "old.json"), str(queries), "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype={"class": str})
    assert rows["class"].notna().all() and rows["probability"].isna().all()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "without calibration" in err[0] and str(tmp_path / "old.json") in err[0]


def test_predict_refuses_a_card_of_another_backbone(digits_cards, tmp_path, monkeypatch, capsys):
    from siglip_adapter import encoders
    from siglip_adapter.cli import main

    encoder, cards, _, queries = digits_cards
    monkeypatch.setattr(encoders, "build_encoder", lambda cfg: encoder)
    card = json.loads(cards[1].read_text())
    card["backbone"]["mean"] = [0.485, 0.456, 0.406]  # made with ImageNet normalisation
    foreign = tmp_path / "tip_adapter.json"
    foreign.write_text(json.dumps(card))
    (tmp_path / "tip_adapter.safetensors").write_bytes(cards[1].with_suffix(".safetensors").read_bytes())
    assert main(["predict", "--card", str(cards[0]), "--card", str(foreign), str(queries), "--json"]) == 2
    err = capsys.readouterr().err
    assert "another backbone or preprocessing" in err and "mean" in err and str(foreign) in err
