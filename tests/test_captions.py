"""Caption cleaning, the token limit, resumable captioning, and the hub code paths on tiny
random-weight models built from configs (SmolVLM's Idefics3 architecture, T5)."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import kill_midway
from PIL import Image

from siglip_adapter.captions.captioners import Captioner, VLMCaptioner
from siglip_adapter.captions.clean import clean_caption
from siglip_adapter.captions.make import Batches, caption_images
from siglip_adapter.captions.summarise import Finishing, Summariser, T5Summariser
from siglip_adapter.encoders.base import TokenLimit
from siglip_adapter.sources.fashion_mnist import ArraySource


class Limit(TokenLimit):
    def __init__(self, tokenizer, max_text_tokens):
        self.tokenizer, self.max_text_tokens = tokenizer, max_text_tokens
        self.model_id = "test-tokenizer"


PROMPT = "Describe the visible attributes of this image in one sentence. Do not repeat this instruction."


@pytest.mark.parametrize("dirty,clean", [
    # a chat transcript with role tags and special tokens: the last answer only
    ("User:<image>Describe the visible attributes of this image in one sentence. Do not repeat this instruction.<end_of_utterance>\n"
     "Assistant: A bowl of ramen with a soft egg.<end_of_utterance>", "A bowl of ramen with a soft egg."),
    # an echoed instruction
    ("Describe the visible attributes of this image in one sentence. A white sneaker with red laces.", "A white sneaker with red laces."),
    # a phrase repeated three times
    ("A plate of pasta, a type of food, a type of food, a type of food.", "A plate of pasta, a type of food."),
    # markdown bullets, emphasis and a header
    ("### Attributes\n- **Colour:** red\n- **Shape:** round\n- *Background*: a wooden table",
     "Attributes. Colour: red. Shape: round. Background: a wooden table."),
    ("A dog on grass. A dog on grass. A dog on grass.", "A dog on grass."),
    ('  Assistant:  "A red  shoe\non grass"  ', "A red shoe on grass."),
    ("A bag!", "A bag!"),
    # empty answers
    ("", ""), ("<end_of_utterance>", ""), ("Assistant:", ""), ("**", ""),
])
def test_clean_caption_on_dirty_outputs(dirty, clean):
    assert clean_caption(dirty, PROMPT) == clean


def test_a_class_name_the_prompt_gave_is_not_an_echo():
    prompt = "This is a photo of a T-shirt or top. Please describe the object's shape, colour and background."
    text = "a photo of a T-shirt or top, or possibly a vest or a T-shirt"
    assert clean_caption(text, prompt) == text + "."
    assert clean_caption("This is a photo of a T-shirt or top. The shirt is white.", prompt) == "The shirt is white."


class Summarising(Summariser):
    def __init__(self):
        self.seen = []

    def summarise(self, texts):
        self.seen += list(texts)
        return ["assistant: a short summary" for _ in texts]


def test_finish_summarises_only_over_the_limit_and_counts_empties(minilm_tokenizer):
    from siglip_adapter.captions.clean import PLACEHOLDER

    lim, summ = Limit(minilm_tokenizer, 12), Summarising()
    long = "a remarkably unusual handbag with " + "many small pockets and " * 10
    rows = Finishing(lim, summ)(["A cat on a mat.", long, "<end_of_utterance>"], [PROMPT] * 3)
    assert summ.seen == [clean_caption(long, PROMPT)]  # the only caption over the encoder's limit
    (r0, c0, s0, f0, n0, e0, sm0, t0, x0), (r1, c1, s1, f1, n1, e1, sm1, t1, x1), (_, c2, _, f2, _, e2, sm2, _, _) = rows
    assert (x0, x1) == (False, False)  # no summary made again in fp32
    assert (s0, f0, sm0, e0, t0) == ("", "A cat on a mat.", False, False, False)
    assert (s1, f1, sm1, t1) == ("a short summary.", "a short summary.", True, False)
    assert (c2, f2, e2, sm2) == (PLACEHOLDER, PLACEHOLDER, True, False)
    assert all(r[4] == lim.count_tokens(r[3]) <= 12 for r in rows)
    # The authors' settings: every caption summarised; without a summariser a long one is cut, and says so.
    assert [r[6] for r in Finishing(lim, Summarising(), summarise="always")(["A cat.", long], [PROMPT] * 2)] == [True, True]
    cut = Finishing(lim)([long], [PROMPT])[0]
    assert cut[7] and cut[4] <= 12 and clean_caption(long, PROMPT).startswith(cut[3].rstrip("."))
    # cleaning none keeps the decoded transcript as it was (whitespace aside)
    kept = Finishing(Limit(minilm_tokenizer, 64), cleaning="none")(["User: Describe it.\nAssistant:  a cat"], ["Describe it."])[0]
    assert kept[1] == "User: Describe it. Assistant: a cat"
    with pytest.raises(ValueError, match="captions.cleaning"):
        Finishing(lim, cleaning="some")


def test_truncate_enforces_the_token_limit(minilm_tokenizer):
    lim = Limit(minilm_tokenizer, 16)
    text = "a photo of a " + " ".join(["remarkably unusual handbag"] * 20)
    cut = lim.truncate(text)
    assert lim.count_tokens(cut) <= 16 and text.startswith(cut) and len(cut) > 20
    assert lim.truncate("short text") == "short text"


class CountingCaptioner(Captioner):
    model_id, prompt = "counting", "none"

    def __init__(self):
        self.seen = []

    def prompt_for(self, classname=None):
        return self.prompt

    def describe(self, images, classnames=None):
        self.seen += [np.asarray(im)[0, 0, 0] for im in images]
        return [f"caption {int(np.asarray(im)[0, 0, 0])} " + "word " * 40 for im in images]


def _counted_captions(tmp_path, tokenizer, n: int):
    """``n`` grey squares captioned into a store under tmp_path in parts of 3, counting every image
    the captioner sees. Returns (first result, a function that captions ``ids`` again, ids, captioner)."""
    x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(n)])
    source = ArraySource({"p": (x, np.zeros(n, dtype=int))}, ["only"])
    ids = [f"p/{i}" for i in range(n)]
    lim, cap = Limit(tokenizer, 12), CountingCaptioner()
    settings = {"captioner": "counting", "token_limit": 12}
    run = lambda which: caption_images(source, which, cap, Finishing(lim), settings, tmp_path, Batches(2, 3))  # noqa: E731
    return run(ids), run, ids, cap


def test_captioning_resumes_from_finished_parts(tmp_path, minilm_tokenizer):
    first, run, ids, cap = _counted_captions(tmp_path, minilm_tokenizer, 7)
    assert len(cap.seen) == 7 and (first["n_tokens"] <= 12).all()
    parts = sorted((tmp_path).rglob("part-*.parquet"))
    assert len(parts) == 3
    second = next(p for p in parts if "p/3" in set(pd.read_parquet(p)["image_id"]))
    second.unlink()  # as if the run had died while captioning the second part
    again = run(ids)
    assert len(cap.seen) == 7 + 3  # only the missing part was captioned again
    assert again[["image_id", "caption"]].equals(first[["image_id", "caption"]])
    assert again["image_id"].is_unique
    # Another run over a subset (another protocol's split) finds every caption in the store.
    subset = run(ids[2:5])
    assert len(cap.seen) == 10 and subset["caption"].tolist() == first["caption"].tolist()[2:5]


@pytest.mark.parametrize("how", ["edited", "truncated"])
def test_an_edited_or_truncated_caption_part_is_made_again(tmp_path, minilm_tokenizer, how):
    """A part whose bytes changed on disk is never read as captions: its rows are made again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, run, ids, cap = _counted_captions(tmp_path, minilm_tokenizer, 6)
    part = sorted(tmp_path.rglob("part-*.parquet"))[0]
    if how == "truncated":
        part.write_bytes(part.read_bytes()[:100])
    else:  # a caption rewritten, the file still a valid parquet table with the old metadata
        table = pq.read_table(part)
        captions = table.column("caption").to_pylist()
        table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(["edited"] + captions[1:]))
        pq.write_table(table, part)
    with pytest.warns(UserWarning, match="made again"):
        again = run(ids)
    assert len(cap.seen) == 6 + 3 and "edited" not in set(again["caption"])
    assert again[["image_id", "caption"]].equals(first[["image_id", "caption"]])


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


_KILLED_RUN = """
import sys, time
import numpy as np
from siglip_adapter.captions.captioners import Captioner
from siglip_adapter.captions.make import Batches, caption_images
from siglip_adapter.captions.summarise import Finishing
from siglip_adapter.sources.fashion_mnist import ArraySource

class Words:  # a whitespace tokenizer standing in for the encoder's
    model_id, max_text_tokens, revision = "words", 64, ""
    def count_tokens(self, text): return len(text.split())
    def truncate(self, text): return " ".join(text.split()[:64])

class Slow(Captioner):
    model_id, prompt = "slow", "none"
    def prompt_for(self, classname=None): return self.prompt
    def describe(self, images, classnames=None):
        time.sleep(0.15)
        return [f"a square of grey level {int(np.asarray(im)[0, 0, 0])}" for im in images]

x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(40)])
source = ArraySource({"p": (x, np.zeros(40, dtype=int))}, ["only"])
caption_images(source, [f"p/{i}" for i in range(40)], Slow(), Finishing(Words()), {"captioner": "slow"}, sys.argv[1], Batches(2, 4, 0))
"""


def test_a_killed_captioning_run_resumes_with_nothing_lost_or_redone(tmp_path):
    """A real ``kill -9`` mid-run: the rerun makes only the parts the dead run had not finished,
    and the result has every id once."""
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    store = tmp_path / "store"
    kill_midway(script, store, lambda: len(list(store.glob("part-*.parquet"))) >= 3)
    finished = {i for p in store.glob("part-*.parquet") for i in pd.read_parquet(p)["image_id"]}
    assert 12 <= len(finished) < 40, "the run was not killed mid-way"

    class Counting(CountingCaptioner):
        def describe(self, images, classnames=None):
            self.seen += [f"p/{int(np.asarray(im)[0, 0, 0])}" for im in images]
            return [f"a square of grey level {int(np.asarray(im)[0, 0, 0])}" for im in images]

    class Words:
        model_id, max_text_tokens, revision = "words", 64, ""

        def count_tokens(self, text):
            return len(text.split())

        def truncate(self, text):
            return " ".join(text.split()[:64])

    x = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in range(40)])
    source = ArraySource({"p": (x, np.zeros(40, dtype=int))}, ["only"])
    ids = [f"p/{i}" for i in range(40)]
    cap = Counting()
    out = caption_images(source, ids, cap, Finishing(Words()), {"captioner": "slow"}, store, Batches(2, 4, 0))
    assert not finished & set(cap.seen) and len(cap.seen) == 40 - len(finished)  # nothing finished is made again
    assert sorted(out["image_id"]) == sorted(ids) and out["image_id"].is_unique  # nothing lost, nothing twice
    assert out.set_index("image_id").loc["p/7", "caption"] == "a square of grey level 7."
    stored = pd.concat([pd.read_parquet(p) for p in store.glob("part-*.parquet")])
    assert stored["image_id"].is_unique and len(stored) == 40 and not list(store.glob("*.tmp"))


def test_caption_quality_counts_what_it_names():
    from siglip_adapter.captions.quality import caption_flags, caption_quality

    given = "This is a photo of a sandal. Please describe the object's shape and colour."
    rows = [  # image_id, prompt, raw, caption, n_tokens, empty, summarised, truncated
        ("a", "Describe this image.", "A brown leather sandal.", "A brown leather sandal.", 6, False, False, False),  # recognised, no leak
        ("b", given, "User: This is a photo of a sandal. Assistant: a sandal", "This is a photo of a sandal. a sandal", 12, False, False, False),
        ("c", given, "A sandal on sand.", "A sandal on sand.", 5, False, False, False),  # the class the prompt gave
        ("d", "Describe this image.", "A bag, a bag, a bag.", "A bag.", 3, False, False, False),
        ("e", "Describe this image.", "", "a photo.", 3, True, False, False),
        ("f", "Describe this image.", "word " * 90, "word " * 64, 64, False, True, True),
    ]
    caps = pd.DataFrame(rows, columns=["image_id", "prompt", "raw", "caption", "n_tokens", "empty", "summarised", "truncated"])
    caps = caps.assign(fp32_caption=[False] * 5 + [True], fp32_summary=[True] + [False] * 5)
    flags = caption_flags(caps, dict(zip("abcdef", ["sandal", "sandal", "sandal", "bag", "bag", "bag"]))).set_index("image_id")
    assert list(flags["prompt_leak"]) == [False, True, False, False, False, False]
    assert list(flags["class_leak"]) == [False, True, True, False, False, False]
    assert list(flags["names_class"]) == [True, True, True, True, False, False]
    assert list(flags["repetition"]) == [False, False, False, True, False, True]
    q = caption_quality(flags.reset_index(), token_limit=64)
    assert q["captions"] == 6 and q["leakage"] == pytest.approx(2 / 6, abs=1e-6) and q["empty"] == pytest.approx(1 / 6, abs=1e-6)
    assert q["summarised"] == q["truncated"] == pytest.approx(1 / 6, abs=1e-6) and q["repetition"] == pytest.approx(2 / 6, abs=1e-6)
    assert q["fp32_captions"] == 1 and q["fp32_summaries"] == 1  # counts, not rates
    from siglip_adapter.captions.quality import has_repetition

    assert not has_repetition("A red  shoe\non grass.")  # raw spacing is not repetition
    assert sum(q["length_histogram"].values()) == 6 and q["length_histogram"]["<= 64"] == 1 and q["length_histogram"]["<= 8"] == 4


def test_a_half_precision_batch_that_went_bad_is_captioned_again_in_fp32_and_counted(tiny_vlm, tmp_path, minilm_tokenizer):
    """GenerationGuard: non-finite scores (what an fp16 overflow on a T4 leaves) make the batch be
    generated again by a float32 copy of the model; the captions record it and the quality counts it.
    This CPU test fakes the overflow: the half-precision model's output head returns NaN."""
    import copy

    from siglip_adapter.captions.quality import caption_flags, caption_quality

    model, proc = tiny_vlm
    cap = VLMCaptioner(copy.deepcopy(model), proc, "tiny-idefics3", "Describe this image.", max_new_tokens=6, device="cpu")
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)) for _ in range(3)]
    reference = cap.describe(images)
    assert cap.last_fp32 is False
    cap.guard.precision = "fp16"  # as the captioner resolves it on a T4
    assert cap.describe(images) == reference and cap.last_fp32 is False  # good scores: nothing redone
    head = cap.model.get_output_embeddings()
    head.register_forward_hook(lambda m, i, out: torch.full_like(out, float("nan")) if m is head else out)  # the copy is unaffected
    assert cap.describe(images) == reference and cap.last_fp32 is True

    source = ArraySource({"p": (np.stack([np.asarray(im) for im in images]), np.zeros(3, dtype=int))}, ["only"])
    rows = caption_images(source, ["p/0", "p/1", "p/2"], cap, Finishing(Limit(minilm_tokenizer, 64)), {"captioner": "tiny"}, tmp_path,
                          Batches(2, 3, 0))
    assert rows["fp32_caption"].all() and not rows["fp32_summary"].any()
    quality = caption_quality(caption_flags(rows, {i: "only" for i in rows["image_id"]}), 64)
    assert quality["fp32_captions"] == 3 and quality["fp32_summaries"] == 0


def test_a_stage_past_its_deadline_stops_between_parts_with_the_finished_ones_stored(tmp_path, minilm_tokenizer, monkeypatch):
    from siglip_adapter import budget

    monkeypatch.setenv(budget.DEADLINE_ENV, "1")  # long past
    with pytest.raises(budget.OutOfTime):
        _counted_captions(tmp_path, minilm_tokenizer, 7)
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 1  # one part per call always, then the budget stops it
    monkeypatch.delenv(budget.DEADLINE_ENV)
    first, _, _, cap = _counted_captions(tmp_path, minilm_tokenizer, 7)
    assert len(cap.seen) == 4 and len(first) == 7  # a rerun captions only what the stopped one had not
