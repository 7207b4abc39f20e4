"""Making a run's captions: ``caption_images`` (resumable, in parts, shared across runs through a
store folder keyed by every setting that changes a caption, ``caption_settings``) and the run's
captions table (``write_captions`` / ``read_captions``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from .. import budget
from ..atomic import write_atomic
from ..data import load_images
from ..encoders.base import batched
from ..shard import Shard
from ..store import cache_key, code_version, read_parts, write_part
from .captioners import Captioner
from .summarise import Finishing

# Per image: its prompt, the raw, cleaned, summarised and final text, its token count, whether it
# was empty, summarised or cut, and whether its caption / summary had to be made again in fp32.
CAPTION_COLUMNS = ["image_id", "prompt", "raw", "clean", "summary", "caption", "n_tokens", "empty", "summarised", "truncated",
                   "fp32_caption", "fp32_summary"]
# The code a caption's text depends on (decoding, prompts, the offline captioner's image tower).
CAPTION_CODE = ("captions", "prompts", "encoders", "sources.images")


@dataclass(frozen=True)
class Batches:
    """How captioning reads and stores: images per batch, captions per stored part (the unit an
    interrupted run resumes at), DataLoader workers."""

    batch_size: int = 8
    chunk_size: int = 256
    num_workers: int | str = "auto"

    @classmethod
    def from_config(cls, cfg: dict) -> "Batches":
        return cls(cfg["captions"]["batch_size"], cfg["captions"]["chunk_size"], cfg["data"]["num_workers"])


def caption_settings(captioner: Captioner, finishing: Finishing, images: dict | None = None) -> dict:
    """Everything that changes a caption's text: the images (``images``: the source and how it is
    read, e.g. inverted), the captioner's model, revision, prompt settings, generation settings and
    dtype, the summariser's (or the offline minimum length), and the token limit with its
    tokenizer, and the version of the code that makes captions. Not the split: a caption belongs
    to an image, whatever its split."""
    return {**{f"image_{k}": v for k, v in (images or {}).items()}, **captioner.settings(), **finishing.settings(),
            "code": code_version(*CAPTION_CODE)}


def _write_part(path: Path, rows: list[tuple]) -> None:
    """One part of a caption store (``store.write_part``: atomic, with the SHA-256 of its rows)."""
    write_part(path, pd.DataFrame(rows, columns=CAPTION_COLUMNS))


def _stored(store: Path) -> dict[str, tuple]:
    """Every caption already in a store folder: {image id: row}. A bad part (``store.read_parts``:
    unreadable, or edited or truncated on disk) is removed with a warning and its captions are
    made again."""
    have = {}
    for frame in read_parts(store, CAPTION_COLUMNS, "captions", "part-*.parquet").values():
        for row in frame.itertuples(index=False):
            have[row.image_id] = tuple(row)
    return have


def caption_images(source, ids: Sequence[str], captioner: Captioner, finishing: Finishing, settings: dict, store: Path,
                   batches: Batches = Batches(), classnames: dict[str, str] | None = None, shard: Shard | None = None) -> pd.DataFrame:
    """Describe -> clean -> summarise (or lengthen, offline) -> enforce the token limit, for every id
    (``finishing``).

    ``store`` is the folder of one ``settings`` (see ``caption_store``): captions already there
    are reused whatever run made them; the missing ones are made in parts of
    ``batches.chunk_size``, each written atomically as it finishes, so an interrupted run resumes
    with nothing lost or redone. ``classnames`` ({id: class}) fills class-template prompts.
    Returns one row per id (sorted): ``CAPTION_COLUMNS`` (the prompt, the raw, cleaned, summarised
    and final text, its token count, and whether it was empty, summarised or cut), plus the
    settings as columns. ``shard`` (every process of it calls this alike): each makes its share of
    the parts (``Shard.take``), then reads the others'; the parts and the result are those of one
    process.
    """
    ids = sorted(ids)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    shard = shard or Shard()
    shard.agree("the caption store", store.name)
    shard.wait()  # every process sees the same finished parts, so all cut the same chunks
    have = _stored(store)
    todo = [i for i in ids if i not in have]
    chunks = list(batched(todo, batches.chunk_size))
    mine = shard.take(chunks)
    if shard.world > 1:
        print(f"{shard}: {len(mine)} of {len(chunks)} caption parts", flush=True)
    for n, chunk in enumerate(tqdm(mine, desc="caption parts" if shard.world == 1 else f"caption parts ({shard})", unit="part")):
        if n:  # at least one part per call, then the time budget (siglip_adapter.budget) between parts
            budget.check("caption parts")
        rows = []
        if captioner.reads_ids:  # no image to decode (offline labels from the stored tower outputs)
            loaded = ((list(b), None) for b in batched(chunk, max(batches.batch_size, 256)))
        else:
            loaded = load_images(source, chunk, batches.batch_size, batches.num_workers, desc="captioning")
        for batch, images in loaded:
            names = [classnames.get(i) if classnames else None for i in batch]
            prompts = [captioner.prompt_for(c) for c in names]
            raw = captioner.describe(images, names) if images is not None else captioner.describe_ids(batch, names)
            retried = bool(captioner.last_fp32)  # this batch was captioned again in fp32 (GenerationGuard)
            done = finishing(raw, prompts)
            rows += [(i, q, *d[:-1], retried, d[-1]) for i, q, d in zip(batch, prompts, done)]
        _write_part(store / f"part-{cache_key({'ids': list(chunk)})}.parquet", rows)  # whole or absent
        have.update({r[0]: r for r in rows})
    if shard.world > 1:
        shard.wait()
        have = _stored(store)  # the other processes' parts
    out = pd.DataFrame([have[i] for i in ids], columns=CAPTION_COLUMNS)
    for k, v in settings.items():
        if k not in CAPTION_COLUMNS:  # the per-image prompt stays; the settings' default prompt is in vlm_prompt
            out[k] = v
    return out


def caption_store(cache_root: Path, settings: dict) -> Path:
    """The store folder of captions made under ``settings`` (shared by every run of a dataset)."""
    return Path(cache_root) / "captions" / cache_key(settings)


def write_captions(df: pd.DataFrame, path: Path) -> None:
    """Write a run's captions table atomically."""
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_captions(path: Path, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Captions for ``ids`` in that order (all, sorted by id, for None); an id without a
    caption is an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no captions; run notebooks/01_captions first")
    df = pd.read_parquet(path).set_index("image_id")
    if ids is None:
        return df.sort_index().reset_index()
    missing = [i for i in ids if i not in df.index]
    if missing:
        raise ValueError(f"{path}: no caption for {len(missing)} images (e.g. {missing[:3]}); rerun 01_captions")
    return df.loc[list(ids)].reset_index()
