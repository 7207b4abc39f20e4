"""Caption cleaning, the token limit, resumable captioning, and the hub code paths on tiny
random-weight models built from configs (SmolVLM's Idefics3 architecture, T5)."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from siglip_adapter.captions import T5Summariser, VLMCaptioner, caption_images, clean_caption
from siglip_adapter.sources.fashion_mnist import ArraySource
from siglip_adapter.encoders import TokenizerText


class Limit(TokenizerText):
    def __init__(self, tokenizer, max_text_tokens):
        self.tokenizer, self.max_text_tokens = tokenizer, max_text_tokens
        self.model_id = "test-tokenizer"


def test_clean_caption():
    assert clean_caption('  Assistant:  "A red  shoe\non grass"  ') == "A red shoe on grass."
    assert clean_caption("A bag!") == "A bag!"


def test_truncate_enforces_the_token_limit(minilm_tokenizer):
    lim = Limit(minilm_tokenizer, 16)
    text = "a photo of a " + " ".join(["remarkably unusual handbag"] * 20)
    cut = lim.truncate(text)
    assert lim.count_tokens(cut) <= 16 and text.startswith(cut) and len(cut) > 20
    assert lim.truncate("short text") == "short text"


class CountingCaptioner:
    model_id, prompt = "counting", "none"

    def __init__(self):
        self.seen = []

    def prompt_for(self, classname=None):
        return self.prompt

    def describe(self, images, classnames=None):
        self.seen += [np.asarray(im)[0, 0, 0] for im in images]
        return [f"caption {int(np.asarray(im)[0, 0, 0])} " + "word " * 40 for im in images]


def test_captioning_resumes_from_finished_parts(tmp_path, minilm_tokenizer):
    x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(7)])
    source = ArraySource({"p": (x, np.zeros(7, dtype=int))}, ["only"])
    ids = [f"p/{i}" for i in range(7)]
    lim, cap = Limit(minilm_tokenizer, 12), CountingCaptioner()
    settings = {"captioner": "counting", "token_limit": 12}
    first = caption_images(source, ids, cap, None, lim, settings, tmp_path, batch_size=2, chunk_size=3)
    assert len(cap.seen) == 7 and (first["n_tokens"] <= 12).all()
    parts = sorted((tmp_path).rglob("part-*.parquet"))
    assert len(parts) == 3
    second = next(p for p in parts if "p/3" in set(pd.read_parquet(p)["image_id"]))
    second.unlink()  # as if the run had died while captioning the second part
    again = caption_images(source, ids, cap, None, lim, settings, tmp_path, batch_size=2, chunk_size=3)
    assert len(cap.seen) == 7 + 3  # only the missing part was captioned again
    assert again[["image_id", "caption"]].equals(first[["image_id", "caption"]])
    assert again["image_id"].is_unique
    # Another run over a subset (another protocol's split) finds every caption in the store.
    subset = caption_images(source, ids[2:5], cap, None, lim, settings, tmp_path, batch_size=2, chunk_size=3)
    assert len(cap.seen) == 10 and subset["caption"].tolist() == first["caption"].tolist()[2:5]


@pytest.fixture(scope="module")
def tiny_vlm(minilm_tokenizer):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = minilm_tokenizer.__class__.from_pretrained(minilm_tokenizer.name_or_path)
    tok.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]})
    template = ("{% for m in messages %}{{ m['role'] }}:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                "{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
    ip = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    proc = Idefics3Processor(ip, tok, image_seq_len=4, chat_template=template)
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id),
        scale_factor=2, image_token_id=proc.image_token_id)
    torch.manual_seed(0)
    return Idefics3ForConditionalGeneration(cfg), proc


def test_vlm_captioner_batches_like_single_images(tiny_vlm):
    model, proc = tiny_vlm
    cap = VLMCaptioner(model, proc, "tiny-idefics3", "Describe this image.", max_new_tokens=6, device="cpu")
    assert proc.tokenizer.padding_side == "left"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)) for _ in range(3)]
    batch = cap.describe(images)
    assert len(batch) == 3 and all(isinstance(t, str) and t for t in batch)
    assert batch == [cap.describe([im])[0] for im in images]


def test_t5_summariser_uses_the_task_prefix(minilm_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = minilm_tokenizer
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, texts, **kw):
            seen.extend(texts)
            return self.inner(texts, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    summ = T5Summariser(T5ForConditionalGeneration(cfg), Spy(tok), "tiny-t5", max_new_tokens=5, device="cpu")
    out = summ.summarise(["a long description of a shoe", "a bag on a table"])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert seen == ["summarize: a long description of a shoe", "summarize: a bag on a table"]
