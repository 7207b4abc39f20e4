"""Encoders: SigLIP's code path on a tiny random model built from a config, and the offline
ConSE encoder on its real packaged weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from siglip_adapter.encoders import ConseEncoder, SiglipEncoder, to_pixels


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
