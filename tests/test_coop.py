"""CoOp's text-from-embeddings path (methods.coop.ContextPrompts) on both text towers, the real
all-MiniLM-L6-v2 of the offline encoder and a tiny random SigLIP with the real architecture and
tokenizer classes: at the init words it is the encoder's own text path, gradients reach the
context only, and CoOp learns from it and scores from its saved tensors."""

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
    fitted = registry.get("coop").fit(task, params)
    start = CoOp(ContextPrompts(encoder, SHOES), 100.0, class_specific)
    assert start.ctx.shape[0] == (len(SHOES) if class_specific else prompts_n_ctx(encoder))
    with torch.no_grad():
        start_acc = float((start(images).argmax(-1) == labels).float().mean())
    assert start_acc < 1 and fitted.chosen["epoch"] > 0 and fitted.val_accuracy > start_acc
    with torch.no_grad():
        start.ctx.copy_(fitted.state["context"])
        torch.testing.assert_close(registry.get("coop").score(fitted.state, fitted.chosen, images), start(images), rtol=1e-5, atol=1e-4)
    assert [h["epoch"] for h in fitted.history][0] == 0 and len(fitted.history) > 1
    # A card needs no text tower: the learned prompts' features are saved.
    from siglip_adapter.cards import load_card, save_card

    path = save_card(fitted, {"format": 1, "backbone": {}, "encoder": {}, "images": {"invert": False}}, tmp_path / "coop.json")
    _, loaded = load_card(path)
    assert torch.equal(loaded.logits(images), fitted.logits(images))


def test_coop_needs_the_encoder():
    shots = Labelled(torch.eye(2), None, torch.arange(2))
    with pytest.raises(ValueError, match="text tower"):
        registry.get("coop").fit(Task(shots, shots, torch.eye(2)), {"init": "a photo of a"})
