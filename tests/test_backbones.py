"""Every hub backbone behind the one encoder interface, each on a tiny random model with its real
architecture, tokenizer and image-processor classes (``kit_tools.tiny_models``), loaded the
way a run loads it (``encoders.build_encoder``): SigLIP, SigLIP 2 at a fixed resolution, SigLIP 2
NaFlex and CLIP. Features are unit-norm and do not depend on the batch; the pixel values (and, for
NaFlex, the patch mask and spatial shapes) that reach the model are exactly what the checkpoint's
own processor makes of each image; each text reaches its tower as that model was trained."""

import numpy as np
import pytest
import torch
from PIL import Image

from siglip_adapter.encoders import build_encoder
from siglip_adapter.encoders.clip import ClipEncoder
from siglip_adapter.store import cache_key

BACKBONES = {"siglip": "siglip", "siglip2": "siglip", "siglip2-naflex": "siglip", "clip": "clip"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from kit_tools.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny"), only=list(BACKBONES))


def _encoder(models, tiny: str, **settings):
    e = {"name": BACKBONES[tiny], "model_id": str(models[tiny]), "revision": "", "device": "cpu", "precision": "fp32",
         "max_text_tokens": "auto", "lowercase": tiny.startswith("siglip2"), "mean": None, "std": None, "resample": None, **settings}
    return build_encoder({"encoder": e})


def _images():
    """Images of three sizes and aspect ratios (NaFlex keeps each one's)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in ((40, 30, 3), (48, 48, 3), (20, 64, 3))]


TEXTS = ["a shoe", "A photo of a rather long and detailed handbag, on a wooden table by the window"]


@pytest.fixture(scope="module", params=list(BACKBONES))
def backbone(request, models):
    return request.param, _encoder(models, request.param)


def test_the_kinds_of_backbone_load_with_their_own_classes(backbone):
    tiny, enc = backbone
    expected = {"siglip": ("SiglipModel", "SiglipTokenizer"), "siglip2": ("SiglipModel", "GemmaTokenizer"),
                "siglip2-naflex": ("Siglip2Model", "Siglip2Tokenizer"), "clip": ("CLIPModel", "CLIPTokenizer")}[tiny]
    assert (type(enc.model).__name__, type(enc.tokenizer).__name__) == expected
    assert isinstance(enc, ClipEncoder) == (tiny == "clip")
    # The text length is the model's own: the caption token limit follows it.
    assert enc.max_text_tokens == (77 if tiny == "clip" else 64)


def test_features_are_unit_norm_and_batch_independent(backbone):
    _, enc = backbone
    images = _images()
    together = enc.encode_images(images)
    alone = torch.cat([enc.encode_images([im]) for im in images])
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(len(images)))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    texts = enc.encode_texts(TEXTS)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(enc.encode_texts(TEXTS[:1])[0], texts[0], atol=1e-5, rtol=1e-5)


def test_the_model_gets_exactly_what_its_own_processor_makes(backbone, models, monkeypatch):
    """Through the path a stage takes (``preprocess`` in a DataLoader worker, ``data.stack`` of the
    batch, ``encode_pixels``) and through ``encode_images``: every input the model's image
    processor returns for these images, and nothing else, reaches ``get_image_features``."""
    from transformers import AutoImageProcessor

    from siglip_adapter.data import stack

    tiny, enc = backbone
    images = _images()
    seen = []
    real = enc.model.get_image_features
    monkeypatch.setattr(enc.model, "get_image_features", lambda **kw: seen.append(kw) or real(**kw))
    enc.encode_pixels(stack([enc.preprocess(im) for im in images]))
    enc.encode_images(images)
    own = AutoImageProcessor.from_pretrained(str(models[tiny]))  # loaded afresh from the model folder
    want = own(images=[im.convert("RGB") for im in images], return_tensors="pt")
    for kw in seen:
        assert set(kw) == set(want.keys())
        for k in want.keys():
            torch.testing.assert_close(kw[k], want[k], atol=0, rtol=0)
    if tiny == "siglip2-naflex":  # the aspect ratios survive: three different patch grids
        assert len({tuple(s.tolist()) for s in want["spatial_shapes"]}) == 3 and (want["pixel_attention_mask"] == 0).any()


def test_each_text_reaches_its_tower_as_the_model_was_trained(backbone, monkeypatch):
    tiny, enc = backbone
    seen = []
    real = enc.model.get_text_features
    monkeypatch.setattr(enc.model, "get_text_features", lambda **kw: seen.append(kw) or real(**kw))
    enc.encode_texts(TEXTS)
    (kw,) = seen
    if tiny == "clip":  # its tokenizer's own padding (the batch's longest) and the mask
        assert set(kw) == {"input_ids", "attention_mask"} and kw["input_ids"].shape[1] < 77
        assert (kw["attention_mask"][0] == 0).any()
    else:  # padded to the model's 64, no mask (SigLIP's and SigLIP 2's training)
        assert set(kw) == {"input_ids"} and kw["input_ids"].shape[1] == 64
    if tiny.startswith("siglip2"):  # trained on lower-cased text
        torch.testing.assert_close(enc.encode_texts(["A SHOE"]), enc.encode_texts(["a shoe"]))


def test_logit_scale_and_bias_are_the_models_own(backbone):
    tiny, enc = backbone
    assert enc.logit_scale == pytest.approx(float(enc.model.logit_scale.exp()))
    assert enc.logit_bias == (0.0 if tiny == "clip" else pytest.approx(float(enc.model.logit_bias)))


def test_the_cache_key_holds_every_processor_and_text_setting(models):
    """Two checkpoints that differ only in a processor setting (CLIP's crop, NaFlex's patch budget)
    or a text setting never share features; an explicit override (mean and std) is in the key too,
    and a parameter left null keeps the processor's own values."""
    from transformers import AutoImageProcessor

    for tiny, change in (("clip", {"crop_size": {"height": 24, "width": 24}}), ("siglip2-naflex", {"max_num_patches": 9})):
        enc = _encoder(models, tiny)
        base = cache_key(enc.cache_fields())
        ip = AutoImageProcessor.from_pretrained(str(models[tiny]), **change)
        other = type(enc)(enc.model, ip, enc.tokenizer, model_id=enc.model_id, device="cpu", precision="fp32")
        assert cache_key(other.cache_fields()) != base, tiny
    clip = _encoder(models, "clip")
    assert clip.cache_fields()["mean"] == list(clip.image_processor.image_mean) != [0.5, 0.5, 0.5]  # CLIP's own
    assert cache_key(_encoder(models, "clip", mean=[0.5] * 3, std=[0.5] * 3).cache_fields()) != cache_key(clip.cache_fields())
    s2 = _encoder(models, "siglip2")
    assert cache_key(_encoder(models, "siglip2", lowercase=False).text_fields()) != cache_key(s2.text_fields())
    assert s2.text_fields()["tokenizer"] == "GemmaTokenizer" and clip.text_fields()["text_attention_mask"] is True


def test_decoding_workers_feed_every_backbone_as_one_process_does(backbone, tmp_path):
    """Image files through DataLoader workers (``preprocess`` pickled into a worker, each batch
    stacked there, NaFlex's three inputs key by key), as the embed stage and ``predict`` read
    them: the same features as ``encode_images`` on the decoded images."""
    from siglip_adapter.cards import embed_files

    _, enc = backbone
    files = []
    for n, im in enumerate(_images()):
        files.append(tmp_path / f"{n}.png")
        im.save(files[-1])
    got = embed_files(enc, files, invert=False, batch_size=2, num_workers=1)
    torch.testing.assert_close(got, enc.encode_images([Image.open(f).convert("RGB") for f in files]), atol=1e-5, rtol=1e-5)


TOY_FAMILY = '''
"""A toy family: an image is its 4 x 4 pixels, a text the mean of its characters' embeddings."""
import torch
import torch.nn.functional as F

from siglip_adapter.encoders.base import Encoder
from siglip_adapter.encoders.device import numerics, resolve_device
from siglip_adapter.encoders.transforms import SquashNormalise


class Characters:
    is_fast = True

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        out = {"input_ids": [ord(c) % 64 for c in text]}
        return {**out, "offset_mapping": [(i, i + 1) for i in range(len(text))]} if return_offsets_mapping else out


class PixelMean(Encoder):
    name = "pixel-mean"

    def __init__(self, model_id, device):
        self.model_id, self.device, self.precision, self.max_text_tokens = model_id, resolve_device(device), "fp32", 16
        self.tokenizer, self.preprocess = Characters(), SquashNormalise(4, [0.5] * 3, [0.5] * 3)
        self.table = torch.nn.Embedding(64, 48)

    @classmethod
    def from_config(cls, e):
        return cls(e["model_id"], e["device"])

    def text_fields(self):
        return {"encoder": self.name, "model_id": self.model_id, "numerics": numerics(self.device)}

    def cache_fields(self):
        return {**self.text_fields(), "image_size": 4}

    def encode_pixels(self, pixels):
        return F.normalize(pixels.flatten(1).float(), dim=-1)

    def text_inputs(self, texts):
        return {"ids": [torch.tensor(self.tokenizer(t)["input_ids"] or [0]) for t in texts]}

    def text_features(self, inputs):
        return F.normalize(torch.stack([self.table(i).mean(0) for i in inputs["ids"]]), dim=-1)

    def input_embeddings(self):
        return self.table

    def text_tower_parameters(self):
        return list(self.table.parameters())


ENCODER = PixelMean
'''


def test_a_new_family_is_one_module(tmp_path, monkeypatch, root):
    """README, "Add a backbone": a module ``<name>.py`` in ``siglip_adapter/encoders`` with an
    ``Encoder`` subclass as ``ENCODER`` is a family; a backbone entry naming it passes the params
    checks and the run's encoder is built from it, with nothing else edited (the module lies in a
    temporary folder added to the package's path)."""
    import shutil

    from siglip_adapter import encoders
    from siglip_adapter.config import ConfigError, load_config
    from siglip_adapter.encoders.base import encode_image_ids, encode_text_list
    from siglip_adapter.sources.fashion_mnist import ArraySource

    shutil.copytree(root / "params", tmp_path / "params")
    (tmp_path / "params" / "overlays" / "toy.yaml").write_text("profile: hub\nbackbone: toy\nbackbones:\n  toy: {name: pixel-mean, model_id: toy/pixel-mean}\n")
    with pytest.raises(ConfigError, match=r"backbones.toy.*'pixel-mean' is not one of \['clip', 'offline-conse', 'siglip'\]"):
        load_config("fashion_mnist", "toy", root=tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "pixel_mean.py").write_text(TOY_FAMILY)
    monkeypatch.setattr(encoders, "__path__", [*encoders.__path__, str(tmp_path / "pkg")])
    cfg = load_config("fashion_mnist", "toy", root=tmp_path)
    enc = encoders.build_encoder(cfg)
    assert type(enc).__name__ == "PixelMean" and enc.model_id == "toy/pixel-mean"
    x = np.stack([np.full((4, 4), 40 * v, dtype=np.uint8) for v in range(5)])
    source = ArraySource({"p": (x, np.arange(5) % 2)}, ["a", "b"])
    images = encode_image_ids(enc, source, source.ids, batch_size=2, num_workers=0)
    texts = encode_text_list(enc, ["a photo of a cat.", "a dog"], batch_size=1)
    assert images.shape == (5, 48) and texts.shape == (2, 48)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(5))
    # The interface's defaults: no learned logit pair, no label tower, the token limit from its tokenizer.
    assert (enc.logit_scale, enc.logit_bias, enc.has_label_tower, enc.revision) == (1.0, 0.0, False, "")
    assert enc.count_tokens("abc") == 3 and enc.truncate("x" * 40) == "x" * 16
