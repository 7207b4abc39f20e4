"""The parameters' schema (pydantic): every key a run's merged parameters may hold, its type and
its range. ``config.load_config`` validates each merged run against ``Params`` and names, for every
mistake, the file and the key that made it (an unknown key at any depth, a wrong type, a value out
of range, a name that is not one of the choices); the profiles and the switches are checked the
same way whether or not a run uses them.

Types are strict: a string never stands for a number, nor a number for a string or a boolean
(an integer is a valid float). Choices come from the code that implements them: the sources and
the encoder families from their packages (a module each, listed without importing it), the split
methods and precisions from here (``SPLIT_METHODS``, ``PRECISIONS``), which those modules import,
so a new choice is added in one place.
The ``methods`` section is not written here: each method module declares its own parameters
(``methods.registry``), and ``params_model`` builds the section from the registry.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from . import encoders
from .sources import SOURCE_KINDS

# Choices declared here and read by the code that implements them (which imports this module;
# this one imports nothing of theirs, so checking these never loads an encoder).
SPLIT_METHODS = ("stratified", "official", "coop", "shuffled")  # split.method (siglip_adapter.data.make_manifest)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # encoder.precision (siglip_adapter.encoders.device.resolve_precision)

Unit = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
NonNegativeCount = Annotated[int, Field(ge=0)]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # names that become folder names (results/runs/<dataset>/...)


def _one_of(*names: str):
    return Literal[tuple(names)]  # Literal["a", "b", ...] from names the code defines


def _family(name: str) -> str:
    """An encoder family: a module of ``siglip_adapter.encoders``, looked up when checked."""
    families = sorted(encoders._families())
    if name not in families:
        raise ValueError(f"'{name}' is not one of {families}")
    return name


def _with_slot(text: str) -> str:
    if "{}" not in text:
        raise ValueError("must contain '{}' where the class name goes")
    return text


def _plain_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError("must be a plain name (letters, digits, '_', '.', '-'; no '/'): it names folders")
    return name


Template = Annotated[str, AfterValidator(_with_slot)]
Grid = Annotated[list[Positive], Field(min_length=1)]
UnitGrid = Annotated[list[Unit], Field(min_length=1)]
WeightGrid = Annotated[list[NonNegative], Field(min_length=1)]
Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Layout(Section):
    """Where a dataset's images are and how they are laid out (also ``dataset.kaggle``'s keys)."""

    source: Optional[_one_of(*SOURCE_KINDS)] = None
    root: Optional[str] = None  # folder / coop: the images (relative paths are under the data root)
    hub_id: Optional[str] = None  # hf: a hub dataset id, or a local folder under the data root
    revision: Optional[str] = None  # hf: the hub commit
    idx_dir: Optional[str] = None  # fashion-mnist: the IDX files
    split_file: Optional[str] = None  # coop: split_zhou_<name>.json
    split_files: Optional[dict[str, str]] = None  # folder: {train|val|test: list file, relative to root}
    split_file_column: Optional[str] = None
    split_names: Optional[dict[str, str]] = None  # hf: {train|val|test: the hub's split name}
    filename_regex: Optional[str] = None  # folder: the class from a flat folder's file names
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    # dataset.kaggle only: the Kaggle dataset (OWNER/SLUG) whose mounted folder ``root`` and the
    # split files are relative to; a kernel attaches it (``siglip-adapter kaggle --images`` overrides it)
    dataset_source: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$")]] = None


class Dataset(Layout):
    """``dataset``: only a dataset's own file (and switches or overlays) sets it."""

    name: Annotated[str, AfterValidator(_plain_name)]
    source: _one_of(*SOURCE_KINDS)
    template: Template
    kaggle: Optional[Layout] = None  # the same dataset as a Kaggle input lays it out
    per_class: Optional[Count] = None  # images drawn per class before the split
    size: Optional[Count] = None  # images the source holds (siglip-adapter kaggle --plan, where they are not on this machine)
    invert: bool = False
    classnames: Optional[list[str]] = None
    class_map: Optional[dict[str, str]] = None
    drop_classes: Optional[list[str]] = None
    classname_case: _one_of("keep", "lower") = "keep"
    classname_style: _one_of("kit", "authors") = "kit"

    @model_validator(mode="after")
    def _kaggle_only_keys(self):
        if self.dataset_source is not None:
            raise ValueError("dataset_source names the Kaggle input of dataset.kaggle; set it there (dataset.kaggle.dataset_source)")
        return self


class Fractions(Section):
    train: Unit
    val: Unit
    test: Unit

    @model_validator(mode="after")
    def _sum_to_one(self):
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {self.train + self.val + self.test:g}")
        return self


class Split(Section):
    method: _one_of(*SPLIT_METHODS)
    fractions: Fractions
    val_from_train: Unit
    keep_source_test: bool
    seed: int


class Validation(Section):
    per_class: NonNegativeCount
    images: Literal["split", "none"]  # none: no validation image at all (support_only); every method's own no-validation rule


class Data(Section):
    num_workers: Union[Literal["auto"], NonNegativeCount]
    max_skipped_fraction: Unit


class Encoder(Section):
    """``encoder``: the shared settings, and, merged over them from ``backbones.<backbone>``, the
    model's own. The image settings left unset (null) are the checkpoint's processor's own (a hub
    encoder); the ConSE encoder, which has no processor, needs them set."""

    name: Annotated[str, AfterValidator(_family)]
    model_id: str
    revision: str
    image_size: Optional[Count] = None
    mean: Optional[Triple] = None
    std: Optional[Annotated[list[Positive], Field(min_length=3, max_length=3)]] = None
    resample: Optional[_one_of("bicubic", "bilinear")] = None
    max_text_tokens: Union[Literal["auto"], Count]
    lowercase: bool = False
    conse_top_k: Count
    batch_size: Count
    chunk_size: Count
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]
    precision: _one_of(*PRECISIONS)

    @model_validator(mode="after")
    def _conse_preprocessing(self):
        if self.name == "offline-conse":
            unset = [k for k in ("image_size", "mean", "std", "resample") if getattr(self, k) is None]
            if unset:
                raise ValueError(f"the offline-conse encoder has no image processor: set {', '.join(unset)}")
        elif self.image_size is not None:  # it would do nothing: the processor sizes (and crops, or patches) each image
            raise ValueError(f"image_size is the offline-conse encoder's; a {self.name} backbone's image size is its processor's "
                             "(set it to null)")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std are set together (null both to keep the processor's own)")
        return self


class Captions(Section):
    captioner: _one_of("offline-labels", "smolvlm")
    summariser: _one_of("token-limit", "t5")
    top_labels: Count
    vlm_model_id: str
    vlm_revision: str
    vlm_prompt: str
    vlm_prompt_class: _one_of("none", "template", "template_first_char")
    class_template: Template
    keep_chat_prompt: bool
    cleaning: _one_of("full", "none")
    summarise: _one_of("over_limit", "always")
    vlm_max_new_tokens: Count
    vlm_image_splitting: bool
    vlm_num_beams: Count
    only_shots: bool
    min_summary_tokens: NonNegativeCount
    t5_model_id: str
    t5_revision: str
    t5_max_new_tokens: Count
    t5_num_beams: Count
    t5_length_penalty: float
    batch_size: Count
    chunk_size: Count


class ShotViews(Section):
    """``shot_views``: augmented views of each shot image (``views``)."""

    n: NonNegativeCount  # views per shot image; 0: none
    scale: Annotated[list[Unit], Field(min_length=2, max_length=2)]  # the crop's share of the image's area: low, high
    ratio: Annotated[list[Positive], Field(min_length=2, max_length=2)]  # the crop's aspect ratio: low, high (log-uniform)
    flip: Unit  # probability of a left-right flip
    seed: int

    @model_validator(mode="after")
    def _ordered(self):
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high <= 1, got {self.scale}")
        if self.ratio[0] > self.ratio[1]:
            raise ValueError(f"ratio must be [low, high] with low <= high, got {self.ratio}")
        return self


class Shards(Section):
    processes: Union[Literal["auto"], Count]
    timeout_hours: Positive  # how long a process waits at a barrier for the others


class Ablation(Section):
    n_seeds: Count


class Run(Section):
    dataset: str
    overlay: str
    protocol: str
    backbone: str


class StaticParams(Section):
    """One run's merged parameters (``config.load_config``) but the methods' (``params_model``)."""

    dataset: Dataset
    protocol: str
    backbone: Annotated[str, AfterValidator(_plain_name)]
    profile: str
    switches: list[str]
    run: Run
    split: Split
    validation: Validation
    data: Data
    shots: Annotated[list[Count], Field(min_length=1)]
    shot_views: ShotViews
    n_seeds: Count
    seed_base: int
    encoder: Encoder
    captions: Captions
    methods: dict  # checked by ``params_model``
    shards: Shards
    ablation: Ablation


@functools.lru_cache(maxsize=None)
def params_model(modules: tuple[str, ...] | None = ()) -> type[BaseModel]:
    """The schema of one run's merged parameters. ``methods``: ``run`` (the methods to run, each one
    that a module declares with a ``fit``), ``modules`` (methods kept outside the kit: dotted module
    names, imported), ``instead`` (a method -> the one that runs in its place: ``config.in_place``) and
    ``<name>`` per declared method, its module's ``Params`` (required where it has a key without a
    default). ``modules`` None: the ``methods`` section is only checked to be a
    mapping, and no method module is imported (nor torch, which they import)."""
    if modules is None:
        return StaticParams
    from .methods import registry

    runnable = tuple(registry.ordered(registry.runnable(modules)))
    sections = {name: (m.params, ... if any(f.is_required() for f in m.params.model_fields.values()) else Field(default_factory=m.params))
                for name, m in registry.for_params(modules).items()}
    methods = create_model("Methods", __base__=Section, run=(list[Literal[runnable]], ...), modules=(list[str], []),
                           instead=(dict[Literal[runnable], Literal[runnable]], {}), **sections)
    return create_model("Params", __base__=StaticParams, methods=(methods, ...))
