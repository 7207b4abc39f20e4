"""CoOp's text-from-embeddings path (methods.coop.ContextPrompts) on both text towers, the real
all-MiniLM-L6-v2 of the offline encoder and a tiny random SigLIP with the real architecture and
tokenizer classes: at the init words it is the encoder's own text path, gradients reach the
context only, and the budgeted CoOp (``coop_val``) learns from it and scores from its saved
tensors; the authors' CoOp (``coop``) starts from their random context in their placeholder slots
(its training is checked against their code in tests/test_parity.py)."""

import pytest
import torch
import torch.nn.functional as F

from siglip_adapter.methods.coop import ContextPrompts
from siglip_adapter.methods import registry
from siglip_adapter.methods.loop import Labelled, Task

NAMES = ["t-shirt_or_top", "ankle boot", "bag", "sneaker"]
SHOES = ["sneaker", "ankle boot", "sandal", "shoe", "boot", "trainer", "slipper", "clog"]
NOISE = {"offline-conse": 0.12, "siglip": 0.02}  # images near another template's prompts, off enough that the start errs


@pytest.fixture(scope="module")
def conse():
    from siglip_adapter.encoders.offline_conse import ConseEncoder

    return ConseEncoder.from_packages(device="cpu")


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    from siglip_adapter.encoders.siglip import SiglipEncoder
    from kit_tools.tiny_models import build_siglip

    return SiglipEncoder.from_pretrained(str(build_siglip(tmp_path_factory.mktemp("siglip"))), device="cpu")


def prompts_n_ctx(encoder) -> int:
    return len(encoder.tokenizer("a photo of a", add_special_tokens=False)["input_ids"])


@pytest.fixture(params=["conse", "siglip"])
def encoder(request):
    return request.getfixturevalue(request.param)


def test_the_init_context_is_the_encoders_own_text_path(encoder):
    prompts = ContextPrompts(encoder, NAMES, "a photo of a")
    assert prompts.prompts[0] == "a photo of a t-shirt or top." and prompts.n_ctx == len(encoder.tokenizer("a photo of a",
                                                                                                            add_special_tokens=False)["input_ids"])
    got = prompts.features(prompts.init_context())
    torch.testing.assert_close(got, encoder.encode_texts(prompts.prompts), rtol=0, atol=1e-6)
    ctx = prompts.init_context()
    other = prompts.features(ctx + ctx.std() * torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0)))
    assert (got - other).abs().max() > 1e-3  # the slots are where the prompt's words are read


def test_gradients_reach_the_context_only(encoder):
    prompts = ContextPrompts(encoder, NAMES)
    tower = prompts.encoder.text_tower_parameters()
    before = [p.requires_grad for p in tower]
    ctx = prompts.init_context().requires_grad_(True)
    prompts.features(ctx).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower)
    assert [p.requires_grad for p in tower] == before  # the tower is left as it was


@pytest.mark.parametrize("class_specific", [False, True])
def test_coop_learns_the_shots_and_scores_from_its_saved_tensors(encoder, class_specific, tmp_path):
    """Images near the class prompts of another template: CoOp must move its context towards them
    (validation = the shots) and its card's score equals the trained prompts' logits."""
    from siglip_adapter.methods.coop import CoOp

    g = torch.Generator().manual_seed(0)
    target = encoder.encode_texts([f"a blurry sketch of many {n}" for n in SHOES])
    labels = torch.arange(len(SHOES)).repeat_interleave(6)
    images = F.normalize(target[labels] + NOISE[encoder.name] * torch.randn(len(labels), target.shape[1], generator=g), dim=-1)
    shots = Labelled(images, None, labels)
    task = Task(shots, shots, encoder.encode_texts([f"a photo of a {n}." for n in SHOES]), 1.0, 0.0, 1, SHOES, encoder)
    params = {"init": "a photo of a", "logit_scale": 100.0, "lr": [0.05], "epochs": 15, "patience": None, "weight_decay": 0.0,
              "class_specific": class_specific}
    fitted = registry.get("coop_val").fit(task, params)
    start = CoOp(ContextPrompts(encoder, SHOES), 100.0, class_specific)
    assert start.ctx.shape[0] == (len(SHOES) if class_specific else prompts_n_ctx(encoder))
    with torch.no_grad():
        start_acc = float((start(images).argmax(-1) == labels).float().mean())
    assert start_acc < 1 and fitted.chosen["epoch"] > 0 and fitted.val_accuracy > start_acc
    with torch.no_grad():
        start.ctx.copy_(fitted.state["context"])
        torch.testing.assert_close(registry.get("coop_val").score(fitted.state, fitted.chosen, images), start(images), rtol=1e-5, atol=1e-4)
    assert [h["epoch"] for h in fitted.history][0] == 0 and len(fitted.history) > 1
    # A card needs no text tower: the learned prompts' features are saved.
    from siglip_adapter.cards import load_card, save_card

    path = save_card(fitted, {"format": 1, "backbone": {}, "encoder": {}, "images": {"invert": False}}, tmp_path / "coop.json")
    _, loaded = load_card(path)
    assert torch.equal(loaded.logits(images), fitted.logits(images))


@pytest.mark.parametrize("name", ["coop", "coop_val"])
def test_coop_needs_the_encoder(name):
    shots = Labelled(torch.eye(2), None, torch.arange(2))
    with pytest.raises(ValueError, match=f"{name} trains its prompts through the text tower"):
        registry.get(name).fit(Task(shots, shots, torch.eye(2)), {"init": "a photo of a"})


@pytest.mark.parametrize("class_specific", [False, True])
def test_the_authors_coop_starts_from_a_seeded_random_context_in_placeholder_slots(encoder, class_specific):
    """``init`` "": n_ctx "X" slots, the context drawn from N(0, 0.02^2) by the global RNG (the
    same draw for the same seed), one per class under CSC."""
    from siglip_adapter.methods.coop import CoOp

    prompts = ContextPrompts(encoder, NAMES, "", 16)
    words = prompts.init.split(" ")
    assert prompts.random and prompts.n_ctx == len(words) == 16 and len(set(words)) == 1 and prompts.prompts[1] == prompts.init + " ankle boot."
    assert words[0] == {"offline-conse": "X", "siglip": "a"}[encoder.name]  # the authors' "X" where it is one token (the tiny SigLIP splits it)
    torch.manual_seed(5)
    ctx = CoOp(prompts, 100.0, class_specific).ctx.detach()
    torch.manual_seed(5)
    again = CoOp(prompts, 100.0, class_specific).ctx.detach()
    assert torch.equal(ctx, again) and ctx.shape == ((len(NAMES),) if class_specific else ()) + prompts.init_context().shape
    assert 0.015 < float(ctx.std()) < 0.025 and not torch.equal(ctx, prompts.init_context())


def test_the_authors_coop_trains_the_last_epoch_with_their_schedule(siglip):
    g = torch.Generator().manual_seed(0)
    names = SHOES[:4]
    target = siglip.encode_texts([f"a blurry sketch of many {n}" for n in names])
    labels = torch.arange(4).repeat_interleave(2)
    shots = Labelled(F.normalize(target[labels] + 0.02 * torch.randn(8, target.shape[1], generator=g), dim=-1), None, labels)
    params = {"n_ctx": 4, "init": "", "class_specific": False, "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0005,
              "epochs": {1: 3, 2: 5}, "batch_size": 32, "warmup_lr": 0.00001}
    fitted = registry.get("coop").fit(Task(shots, shots, target, 1.0, 0.0, 1, names, siglip), params)
    assert fitted.chosen == {"epoch": 5, "n_ctx": 4} and fitted.selected_on == "none" and fitted.candidates == 1
    assert [h["lr"] for h in fitted.history][:2] == [0.00001, 0.002] and len(fitted.history) == 5  # warm-up epoch, then the cosine


def test_protocols_sharing_shots_train_the_budgeted_coop_once_with_the_same_results(siglip, tmp_path, monkeypatch):
    """A budgeted CoOp run stored by one protocol is replayed by the others (``SharedFits.trajectory``): the
    same choice, validation accuracy, learning curve and prompts as training there, for another
    validation set (early stopping included) and for none (support_only), without training again."""
    from siglip_adapter.methods import training
    from siglip_adapter.methods.loop import SharedFits

    g = torch.Generator().manual_seed(1)
    names = SHOES[:4]
    target = siglip.encode_texts([f"a blurry sketch of many {n}" for n in names])
    noisy = lambda n: F.normalize(target[torch.arange(4).repeat_interleave(n)] + 0.05 * torch.randn(4 * n, target.shape[1], generator=g), dim=-1)  # noqa: E731
    shots, val_a, val_b = (Labelled(noisy(n), None, torch.arange(4).repeat_interleave(n)) for n in (3, 5, 2))
    no_val = Labelled(val_a.images[:0], None, val_a.labels[:0])
    class_text = siglip.encode_texts([f"a photo of a {n}." for n in names])
    params = {"init": "a photo of a", "logit_scale": 100.0, "lr": [0.05, 0.01], "epochs": 9, "eval_every": 2, "patience": 1,
              "weight_decay": 0.0, "class_specific": True}
    shared = SharedFits(tmp_path / "fits", val_a)
    task = lambda val, store: Task(shots, val, class_text, 1.0, 0.0, 3, names, siglip, shared=store)  # noqa: E731
    trained = []
    real = training._trained
    monkeypatch.setattr(training, "_trained", lambda *a: trained.append(1) or real(*a))

    def outcome(f):  # (NaN-free text, tensor): the choice, the validation accuracy, the curve; the prompts
        return repr((f.chosen, f.val_accuracy, f.history)), f.state["context"]

    first = registry.get("coop_val").fit(task(val_a, shared), params)
    assert len(trained) == 2 and len(list((tmp_path / "fits" / "trajectories").iterdir())) == 2  # one run per lr, stored
    stopped = 0
    for val in (val_a, val_b, no_val):
        replayed = registry.get("coop_val").fit(task(val, shared), params)
        fresh = registry.get("coop_val").fit(task(val, None), params)
        stopped += sum(1 for lr in params["lr"] if 0 < len([h for h in fresh.history if h["lr"] == lr]) < 6)  # epoch 0 and 5 checks
        (said, prompts), (want, want_prompts) = outcome(replayed), outcome(fresh)
        assert said == want and torch.equal(prompts, want_prompts)
    assert stopped > 0  # early stopping cut some validated run short: replayed too
    assert len(trained) == 2 + 2 + 2 + 1  # the fresh fits trained (2 lrs, 2 lrs, the first lr without validation); the replays none
    assert first.chosen == registry.get("coop_val").fit(task(val_a, None), params).chosen
