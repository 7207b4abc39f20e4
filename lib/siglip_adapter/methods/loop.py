"""What every method is fitted on and the one K x seed loop that fits them.

``Task``: one K-shot sample (``Task.shots``), the protocol's validation images for that K and seed
(``Task.val``) and the class prompts; ``Fitted``: a method's tensors, its choice and the
validation accuracy that chose it, scored through its ``score``. ``method_rows`` is the loop over
K and seeds for every method named in ``methods.run`` (params/defaults.yaml): each method fitted
on the shots with its hyper-parameters chosen on validation, then scored once on test; one row
per method, K and seed, with the chosen hyper-parameters. Finished cells are kept on disk, so a
killed run resumes. The test split never reaches ``fit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .. import budget
from . import registry


def zero_shot_logits(images: torch.Tensor, class_text: torch.Tensor, scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """Class-prompt logits ``scale * (i . T_class) + bias``.

    images (M, D), class_text (N, D), both L2-normalised -> (M, N). scale=1, bias=0 is plain
    cosine; SigLIP's own is scale=exp(logit_scale), bias=logit_bias.
    """
    return scale * images @ class_text.T + bias


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


@dataclass
class Labelled:
    """Image features, their captions' features (None where not captioned) and labels."""

    images: torch.Tensor  # (M, D)
    captions: torch.Tensor | None  # (M, D)
    labels: torch.Tensor  # (M,)


@dataclass
class Task:
    """What a method is fitted on for one K and seed."""

    shots: Labelled  # the K-shot sample: N*K images with their captions
    val: Labelled  # what chooses the hyper-parameters
    class_text: torch.Tensor  # (N, D) class-prompt features
    scale: float = 1.0  # the zero-shot logit form: scale * cos + bias
    bias: float = 0.0
    seed: int = 0
    classnames: list[str] | None = None  # the dataset's class names in label order
    encoder: object = None  # the frozen dual encoder, for methods that train through its text tower (CoOp)
    _fitted: dict = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return self.class_text.shape[0]

    def zero_shot(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_of(zero_shot_state(self), images)

    def fitted(self, name: str, params: dict) -> "Fitted":
        """Method ``name`` fitted on this task, once (a later method that starts from it reuses it)."""
        if name not in self._fitted:
            self._fitted[name] = registry.get(name).fit(self, params)
        return self._fitted[name]


@dataclass
class Fitted:
    """A fitted method: its tensors (``state``), the hyper-parameters validation chose, and the
    validation accuracy that chose them; ``logits(images)`` -> (M, N) through the method's
    ``score``."""

    method: str
    state: dict[str, torch.Tensor]
    chosen: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)  # trained methods: the learning curve (``TrainResult.history``)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return registry.get(self.method).score(self.state, self.chosen, images)

    def accuracy(self, data: Labelled) -> float:
        return accuracy(self.logits(data.images), data.labels)


def names(cfg: dict, trained: bool | None = None) -> list[str]:
    """The methods ``methods.run`` names, in its order; ``trained``: only those that train (True)
    or only those that do not (False)."""
    out = list(cfg["methods"]["run"])
    return out if trained is None else [n for n in out if registry.get(n).trained == trained]


def zero_shot_state(task: "Task") -> dict[str, torch.Tensor]:
    """The class prompts and the logit form, which every method that adds to zero-shot keeps."""
    return {"class_text": task.class_text, "scale": torch.tensor(float(task.scale)), "bias": torch.tensor(float(task.bias))}


def zero_shot_of(state: dict, images: torch.Tensor) -> torch.Tensor:
    return zero_shot_logits(images, state["class_text"], float(state["scale"]), float(state["bias"]))


def best(candidates, evaluate) -> tuple[object, float]:
    """The first candidate with the highest ``evaluate(candidate)`` (validation accuracy): ties go
    to the earlier one in grid order."""
    top, top_acc = None, -1.0
    for c in candidates:
        acc = evaluate(c)
        if acc > top_acc:
            top, top_acc = c, acc
    return top, top_acc


def params_of(cfg: dict, name: str) -> dict:
    """A method's parameters, ``methods.<name>``, with the parameters of the method it starts from
    under ``start``."""
    params = dict(cfg["methods"].get(name) or {})
    start = registry.get(name).start
    if start is not None:
        params["start"] = params_of(cfg, start)
    return params


def cells(cfg: dict) -> list[tuple[int, int]]:
    """The (K, seed) pairs of a run: every ``shots`` value with every seed."""
    from ..config import seeds as seed_list

    return [(k, seed) for k in cfg["shots"] for seed in seed_list(cfg)]


def task_for(inp, cfg: dict, k: int, seed: int, encoder=None) -> Task:
    """The task of one K and seed of a run (``inputs.Inputs``)."""
    return Task(Labelled(*inp.shots(k, seed)), Labelled(*inp.validation(cfg, k, seed)), inp.class_text, inp.scale, inp.bias, seed,
                inp.classnames, encoder)


CELL_COLUMNS = ["method", "row", "history"]  # a finished cell's part: one row per method, its result row and curve as JSON


def method_rows(inp, cfg: dict, names: list[str] | None = None, encoder=None, keep=None, store: Path | None = None) -> pd.DataFrame:
    """Every named method (default ``methods.run``) at every K and seed: fitted on the shots with
    its hyper-parameters chosen on the protocol's validation set, then scored once on test. One
    row per method, K and seed, with the chosen hyper-parameters. ``encoder``: the frozen encoder
    for methods that train through its text tower (CoOp). ``keep(row, history)`` sees every row
    with the method's learning curve (``experiment.Curves`` keeps some).

    ``store`` (a folder, ``RunPaths.cells``): each (K, seed) cell's rows are written there as the
    cell finishes (``store.write_part``), in a folder keyed by the inputs, the parameters, the
    methods, the kit's code, the numeric libraries' versions and torch's threads (``cells_key``). A run killed
    midway resumes at the first unfinished cell: nothing finished is fitted again, nothing is
    lost or counted twice, and a cell edited on disk is refused and fitted again."""
    from tqdm.auto import tqdm

    from ..inputs import result_row, selected_on

    names = list(cfg["methods"]["run"] if names is None else names)
    params = {n: params_of(cfg, n) for n in names}
    test = Labelled(*inp.split("test"))
    todo = cells(cfg)
    folder = Path(store) / cells_key(inp, cfg, names) if store is not None else None
    done = _finished_cells(folder, names) if folder is not None else {}
    resumed = f" ({len(done)} done before, cells/{folder.name})" if done else ""  # in the bar: a notebook's outputs stay the same
    rows, fitted_here = [], 0
    for k, seed in tqdm(todo, desc=f"{', '.join(names)}: K x seeds{resumed}", unit="cell"):
        cell = done.get((k, seed))
        if cell is None:
            if fitted_here and folder is not None:  # stored cells let a stopped stage resume (siglip_adapter.budget)
                budget.check(f"{', '.join(names)}: K x seed cells")
            fitted_here += 1
            task, cell = task_for(inp, cfg, k, seed, encoder), []
            for name in names:
                fitted = task.fitted(name, params[name])
                row = result_row(cfg, name, k, seed, fitted.accuracy(test), fitted.val_accuracy, selected_on(cfg), **fitted.chosen)
                cell.append((_plain(row), _plain(fitted.history)))  # what a resumed run reads back, exactly
            if folder is not None:
                _write_cell(folder, k, seed, cell)
        for row, history in cell:
            rows.append(row)
            if keep is not None:
                keep(row, history)
    return pd.DataFrame(rows)


def cells_key(inp, cfg: dict, names: list[str]) -> str:
    """The key of a run's finished cells: everything a cell's rows depend on."""
    import numpy
    import sklearn

    from ..store import cache_key, code_hash

    code = code_hash(sorted(Path(__file__).resolve().parents[1].rglob("*.py")))
    versions = {"torch": torch.__version__, "numpy": numpy.__version__, "sklearn": sklearn.__version__,
                "threads": torch.get_num_threads(),  # the last bits of a fit (see encoders.numerics)
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return cache_key({"inputs": inp.fingerprint(), "cfg": cfg, "methods": names, "code": code, "versions": versions})


def _plain(value):
    """``value`` as JSON gives it back (numpy and torch scalars as Python numbers, tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _write_cell(folder: Path, k: int, seed: int, cell: list[tuple[dict, list]]) -> None:
    from ..store import write_part

    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([(row["method"], json.dumps(row), json.dumps(history)) for row, history in cell], columns=CELL_COLUMNS)
    write_part(folder / f"cell-{k}-{seed}.parquet", frame)


def _finished_cells(folder: Path, names: list[str]) -> dict[tuple[int, int], list[tuple[dict, list]]]:
    """{(K, seed): [(row, history) per method]} of the cells already written to ``folder``."""
    from ..store import read_parts

    done = {}
    for frame in read_parts(folder, CELL_COLUMNS, "K x seed cells", "cell-*.parquet").values():
        cell = [(json.loads(r), json.loads(h)) for r, h in zip(frame["row"], frame["history"])]
        if cell and [row["method"] for row, _ in cell] == names:
            done[(int(cell[0][0]["shots"]), int(cell[0][0]["seed"]))] = cell
    return done
