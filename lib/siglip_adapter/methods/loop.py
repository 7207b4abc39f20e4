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
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from .. import budget
from . import registry


def zero_shot_logits(images: torch.Tensor, class_text: torch.Tensor, scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """Class-prompt logits ``scale * (i . T_class) + bias``.

    images (M, D), class_text (N, D), both L2-normalised -> (M, N). scale=1, bias=0 is plain
    cosine; SigLIP's own is scale=exp(logit_scale), bias=logit_bias.
    """
    return scale * images @ class_text.T + bias


CLIP_SCALE = 100.0  # CLIP's logit scale: the peers' zero-shot logits are 100 x cosine

NO_VALIDATION = "fixed: no validation"  # a row's ``search`` prefix where the protocol gives no validation image (support_only)


def peer_unit(scale: float) -> float:
    """The factor that turns a weight read against zero-shot logits of ``100 x cosine`` (the unit
    of the peers' published grids: Tip-Adapter's and GDA's code are CLIP's) into one read against
    the run's logit form (``scale * cosine + bias``): ``scale / 100``."""
    return float(scale) / CLIP_SCALE


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

    shots: Labelled | None  # the K-shot sample: N*K images with their captions (None at K = 0: zero-shot)
    val: Labelled  # what chooses the hyper-parameters
    class_text: torch.Tensor  # (N, D) class-prompt features
    scale: float = 1.0  # the zero-shot logit form: scale * cos + bias
    bias: float = 0.0
    seed: int | None = 0  # None: a cell no seed draws (zero-shot on the whole validation split)
    classnames: list[str] | None = None  # the dataset's class names in label order
    encoder: object = None  # the frozen dual encoder, for methods that train through its text tower (CoOp)
    test: Labelled | None = None  # the test split: only for a method that declares ``uses_test`` (the authors' trainable model)
    shared: "SharedFits | None" = None  # the dataset's shared fits (``run`` with a store): trained runs kept for the other protocols
    views: torch.Tensor | None = None  # (V, N*K, D): the shots' augmented views (``shot_views.n`` > 0), in the shots' order
    _fitted: dict = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return self.class_text.shape[0]

    @property
    def has_validation(self) -> bool:
        """False under support_only: no validation image, so each method takes its no-validation rule."""
        return len(self.val.labels) > 0

    def zero_shot(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_of(zero_shot_state(self), images)

    def viewed(self, use: str) -> "Task":
        """The task as a method that takes the views by ``use`` sees it (its ``views`` parameter):
        ``mean``: each shot's image the normalised mean of its views (Tip-Adapter's cache keys);
        ``samples``: every view a shot of its own, with its image's label and caption (GDA, ProKeR,
        CLAP); ``first``: each shot's first view (LP++); ``none``, or no views: the task as it is."""
        if use == "none" or self.views is None or self.shots is None:
            return self
        s, v = self.shots, self.views
        if use == "mean":
            shots = Labelled(F.normalize(v.mean(0), dim=-1), s.captions, s.labels)
        elif use == "samples":
            shots = Labelled(v.reshape(-1, v.shape[-1]), None if s.captions is None else s.captions.repeat(len(v), 1), s.labels.repeat(len(v)))
        elif use == "first":
            shots = Labelled(v[0], s.captions, s.labels)
        else:
            raise ValueError(f"views: '{use}' is not one of none, mean, samples, first")
        return replace(self, shots=shots, views=None, _fitted={})

    def trajectory(self, name: str, params: dict):
        """lr -> the ``training.Trajectory`` of method ``name``'s run at that learning rate on these
        shots (``training.fit_on_shots``), or None without a store."""
        if self.shared is None or self.shots is None:
            return None
        return lambda lr: self.shared.trajectory(self, name, params, lr)

    def fitted(self, name: str, params: dict, key=None) -> "Fitted":
        """Method ``name`` fitted on this task, once (a later method that starts from it reuses it);
        ``key``: another fit of it kept apart (a variant's, with other parameters)."""
        key = name if key is None else key
        if key not in self._fitted:  # on the shots as the method takes their views (a start: as it takes them, Tip-Adapter-F's cache)
            self._fitted[key] = registry.get(name).fit(self.viewed(params.get("views", "none")), params)
        return self._fitted[key]


@dataclass
class Fitted:
    """A fitted method: its tensors (``state``), the hyper-parameters validation chose, and the
    validation accuracy that chose them; ``logits(images[, captions])`` -> (M, N) through the
    method's ``score`` (the images' own captions for a method that declares ``query_captions``)."""

    method: str
    state: dict[str, torch.Tensor]
    chosen: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)  # trained methods: the learning curve (``TrainResult.history``)
    selected_on: str | None = None  # how the choice was made where not on the protocol's validation set: none, fixed, test
    test_accuracy: float | None = None  # a method that scored the test split itself (selected on it: the authors' trainable)
    candidates: int | None = None  # the settings its choice compared (grid points; trained: validation checks over every run), its start's included
    search: str | None = None  # how it chose, where not its method's declared ``search`` (a parameter switches the rule)

    def logits(self, images: torch.Tensor, captions: torch.Tensor | None = None) -> torch.Tensor:
        m = registry.get(self.method)
        with torch.no_grad():
            return m.score(self.state, self.chosen, images, captions) if m.query_captions else m.score(self.state, self.chosen, images)

    def accuracy(self, data: Labelled) -> float:
        return accuracy(self.logits(data.images, data.captions), data.labels)


def names(cfg: dict, kind: str | None = None) -> list[str]:
    """The methods a stage runs, in order. ``kind`` None: ``methods.run``'s; ``training-free`` or
    ``trained``: those of them of that kind (04_adapter, 05_trainable); ``zero-shot``: every
    zero-shot method, the kit's and those of ``methods.modules`` (03_zero_shot: Table I's first
    columns, whatever ``methods.run`` says), in table order."""
    if kind == "zero-shot":
        declared = registry.for_params(tuple(cfg["methods"].get("modules") or ()))
        return registry.ordered([n for n, m in declared.items() if m.kind == "zero-shot"])
    out = list(cfg["methods"]["run"])
    return out if kind is None else [n for n in out if registry.get(n).kind == kind]


def zero_shot_state(task: "Task") -> dict[str, torch.Tensor]:
    """The class prompts and the logit form, which every method that adds to zero-shot keeps."""
    return {"class_text": task.class_text, "scale": torch.tensor(float(task.scale)), "bias": torch.tensor(float(task.bias))}


def zero_shot_of(state: dict, images: torch.Tensor) -> torch.Tensor:
    return zero_shot_logits(images, state["class_text"], float(state["scale"]), float(state["bias"]))


def best(candidates, evaluate) -> tuple[object, float]:
    """The first candidate with the highest ``evaluate(candidate)`` (validation accuracy): ties go
    to the earlier one in grid order (``len(candidates)`` compared: a ``Fitted``'s ``candidates``).
    With no validation image every accuracy is NaN and the first candidate is kept (a grid of one
    value: a fixed choice)."""
    top, top_acc = None, float("nan")
    for c in candidates:
        acc = evaluate(c)
        if top is None or acc > top_acc or (top_acc != top_acc and acc == acc):
            top, top_acc = c, acc
    return top, top_acc


def more(start: int | None, own: int) -> int | None:
    """The candidates of a method that starts from another's choice: the start's and its own (None
    where the start does not say)."""
    return None if start is None else start + own


def params_of(cfg: dict, name: str) -> dict:
    """A method's parameters, ``methods.<name>``, with the parameters of the method it starts from
    under ``start``."""
    params = dict(cfg["methods"].get(name) or {})
    start = registry.get(name).start
    if start is not None:
        params["start"] = params_of(cfg, start)
    return params


def grid(cfg: dict) -> list[tuple[int, int]]:
    """The (K, seed) pairs of a run: every ``shots`` value with every seed."""
    from ..config import seeds as seed_list

    return [(k, seed) for k in cfg["shots"] for seed in seed_list(cfg)]


def cells_of(name: str, cfg: dict, inp, params: dict) -> list[tuple[int, int | None]]:
    """The (K, seed) cells a method is fitted at: its own (``cells=``; zero-shot: one cell, K = 0
    and no seed), else the run's ``grid``."""
    own = registry.get(name).cells
    return grid(cfg) if own is None else list(own(cfg, inp, params))


def task_for(inp, cfg: dict, k: int, seed: int | None, encoder=None) -> Task:
    """The task of one cell of a run (``inputs.Inputs``): K shots of one seed (none at K = 0) and
    the protocol's validation images for them (seed None: the whole validation split; K = 0 with a
    seed: ``validation.per_class`` per class for that seed; none under ``validation.images`` none)."""
    shots = Labelled(*inp.shots(k, seed)) if k else None
    val = inp.validation(cfg, k or int(cfg["validation"]["per_class"]), seed)
    views = inp.shot_views(k, seed, int(cfg.get("shot_views", {}).get("n", 0))) if k else None
    return Task(shots, Labelled(*val), inp.class_text, inp.scale, inp.bias, seed, inp.classnames, encoder, views=views)


CELL_COLUMNS = ["method", "row", "history", "tables"]  # a finished cell's part, per method: its row, curve and table rows as JSON


@dataclass
class Result:
    """What one run of the loop reports: a row per method and cell, and the tables the methods
    make beside their rows (``table``): their own (``tables=``: the adapter's ``sensitivity``),
    their variants' rows (``variants=``: the adapter's ``text_keys``) and the trained methods'
    learning ``curves``."""

    rows: pd.DataFrame
    tables: dict[str, pd.DataFrame]

    def table(self, name: str) -> pd.DataFrame:
        if name not in self.tables:
            raise KeyError(f"no method of this run makes the table '{name}' (it makes {sorted(self.tables)})")
        return self.tables[name]


CURVE_COLUMNS = ["lr", "epoch", "loss", "val_accuracy"]  # a learning curve's point (training.TrainResult.history)


def method_rows(inp, cfg: dict, names: list[str] | None = None, encoder=None, store: Path | None = None) -> pd.DataFrame:
    """The rows of ``run``."""
    return run(inp, cfg, names, encoder, store).rows


def run(inp, cfg: dict, names: list[str] | None = None, encoder=None, store: Path | None = None,
        curves_at: tuple[int, int] | None = None) -> Result:
    """Every named method (default ``methods.run``) at each of its cells (``cells_of``: every K and
    seed, or the method's own): fitted on the shots with its hyper-parameters chosen on the
    protocol's validation set, then scored once on test. One row per method and cell, with the
    chosen hyper-parameters; the cells in the order the methods first name them, the methods of a
    cell in ``names``' order. At each cell a method also makes its tables' rows (``Result``); the
    learning curves are those of the cell ``curves_at`` (default: the largest K, the first seed).
    ``encoder``: the frozen encoder for methods that train through its text tower (CoOp).

    ``store`` (a folder, ``RunPaths.cells``): each (K, seed) cell's rows are written there as the
    cell finishes (``store.write_part``), in a folder keyed by the inputs, the parameters, the
    methods, the kit's code, the numeric libraries' versions and torch's threads (``cells_key``). A run killed
    midway resumes at the first unfinished cell: nothing finished is fitted again, nothing is
    lost or counted twice, and a cell edited on disk is refused and fitted again."""
    from tqdm.auto import tqdm

    from ..config import seeds
    from ..inputs import run_columns

    names = list(cfg["methods"]["run"] if names is None else names)
    params = {n: params_of(cfg, n) for n in names}
    test = Labelled(*inp.split("test"))
    at = {n: cells_of(n, cfg, inp, params[n]) for n in names}
    todo = list(dict.fromkeys(c for n in names for c in at[n]))
    here = {c: [n for n in names if c in at[n]] for c in todo}  # the methods fitted at each cell
    folder = Path(store) / cells_key(inp, cfg, names) if store is not None else None
    done = _finished_cells(folder, here) if folder is not None else {}
    shared = SharedFits(Path(store) / "fits", test) if store is not None else None
    resumed = f" ({len(done)} done before, cells/{folder.name})" if done else ""  # in the bar: a notebook's outputs stay the same
    curves_at = curves_at or (max(cfg["shots"]), seeds(cfg)[0])
    rows, tables, fitted_here = [], {"curves": []}, 0
    for k, seed in tqdm(todo, desc=f"{len(names)} methods: K x seeds{resumed}", unit="cell"):
        cell = done.get((k, seed))
        if cell is None:
            if fitted_here and folder is not None:  # stored cells let a stopped stage resume (siglip_adapter.budget)
                budget.check(f"{', '.join(names)}: K x seed cells")
            fitted_here += 1
            task = replace(task_for(inp, cfg, k, seed, encoder), shared=shared)
            cell = [_fit_cell(task, name, params[name], test, cfg, k, seed, shared) for name in here[(k, seed)]]
            if folder is not None:
                _write_cell(folder, k, seed, cell)
        for row, history, own in cell:
            rows.append(row)
            for name, table_rows in own.items():
                tables.setdefault(name, []).extend(table_rows)
            if (k, seed) == tuple(curves_at):
                tables["curves"] += [{**run_columns(cfg), "method": row["method"], "shots": k, "seed": seed, **h} for h in history]
    out = {name: pd.DataFrame(t) for name, t in tables.items()}
    out["curves"] = pd.DataFrame(tables["curves"], columns=[*run_columns(cfg), "method", "shots", "seed", *CURVE_COLUMNS])
    for name in names:  # a variant's rows in the order of its values: every cell of one value, then of the next
        for table, (key, values) in (registry.get(name).variants or {}).items():
            if table in out:
                out[table] = out[table].sort_values(key, key=lambda v: v.map(list(values).index), kind="stable").reset_index(drop=True)
    return Result(pd.DataFrame(rows), out)


class SharedFits:
    """Fits of the methods that read no validation image (``search`` "none: ..."), kept per dataset
    (``folder``: beside the cells) and keyed by what such a fit reads: the method, its parameters,
    the shots, the class prompts, the logit form, the seed, the test split that scores it, the
    kit's code and the numeric libraries (``environment``). The protocols of a dataset that share
    shots (corrected, realistic, support_only) fit such a method once; the others read its
    accuracy, choice and curve back."""

    def __init__(self, folder: Path, test: Labelled):
        self.folder, self.test = folder, test
        self._test_id = None

    @staticmethod
    def applies(m) -> bool:
        return m.search.startswith("none") and not (m.uses_test or m.tables or m.variants or m.start)

    def key(self, task: Task, name: str, params: dict) -> str:
        from ..store import cache_key, content_hash

        if self._test_id is None:
            self._test_id = [content_hash(self.test.images), content_hash(self.test.labels.float())]
        s = task.shots
        shots = [content_hash(s.images), None if s.captions is None else content_hash(s.captions), content_hash(s.labels.float())]
        return cache_key({"method": name, "params": params, "shots": shots, "class_text": content_hash(task.class_text),
                          "logit_form": [float(task.scale), float(task.bias)], "seed": task.seed, "test": self._test_id, **environment()})

    def trajectory(self, task: Task, name: str, params: dict, lr: float):
        """The stored run of a trained method at one learning rate (``training.Trajectory``), keyed
        as a fit but by what training reads: the parameters less the learning rates tried and the
        early stopping (which only validation decides), the learning rate, and the class names."""
        from .training import Trajectory

        run = {k: v for k, v in params.items() if k not in ("lr", "patience")}
        key = self.key(task, name, {**run, "trajectory_lr": float(lr), "classnames": list(task.classnames or [])})
        return Trajectory(self.folder / "trajectories" / f"{key}.safetensors")

    def get(self, key: str) -> Fitted | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            return Fitted(**json.loads(path.read_text()), state={})
        except (ValueError, TypeError):  # unreadable: fitted again
            return None

    def put(self, key: str, fitted: Fitted) -> Fitted:
        """The fit as the others will read it: its test accuracy computed now, its tensors dropped."""
        from ..atomic import write_atomic

        kept = {"method": fitted.method, "chosen": fitted.chosen, "val_accuracy": fitted.val_accuracy, "history": fitted.history,
                "selected_on": fitted.selected_on, "test_accuracy": fitted.accuracy(self.test) if fitted.test_accuracy is None else
                fitted.test_accuracy, "candidates": fitted.candidates, "search": fitted.search}
        kept = _plain(kept)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(kept)))
        return Fitted(**kept, state={})


def _fit_cell(task: Task, name: str, params: dict, test: Labelled, cfg: dict, k: int, seed: int | None,
              shared: SharedFits | None = None) -> tuple[dict, list, dict]:
    """One method at one cell: (its row, its learning curve, its tables' rows), as JSON gives them
    back (what a resumed run reads, exactly). A method that reads no validation image goes through
    ``shared``: fitted once per dataset for the protocols that share its inputs."""
    from ..inputs import result_row, selected_on

    m = registry.get(name)

    def row_of(fitted: Fitted) -> dict:
        acc = fitted.accuracy(test) if fitted.test_accuracy is None else fitted.test_accuracy
        candidates = fitted.candidates if task.has_validation or fitted.candidates is None else min(fitted.candidates, 1)  # none compared
        return result_row(cfg, name, k, seed, acc, fitted.val_accuracy, fitted.selected_on or selected_on(cfg), search_of(m, fitted, task),
                          candidates, **fitted.chosen)

    task = task.viewed(params.get("views", "none"))
    key = shared.key(task, name, params) if shared is not None and task.shots is not None and SharedFits.applies(m) else None
    fitted = shared.get(key) if key else None
    if fitted is None:
        fitted = (replace(task, test=test) if m.uses_test and m.uses_test(params) else task).fitted(name, params)
        if key:
            fitted = shared.put(key, fitted)
    row = row_of(fitted)
    own = {table: list(make(cfg, k, task, fitted, test, params)) for table, make in (m.tables or {}).items()}
    for table, (key, values) in (m.variants or {}).items():  # the same method with one parameter at each of its values
        base = params.get(key, values[0])  # the first value: the method's own default
        own[table] = [{**row, key: base}] + [{**row_of(task.fitted(name, {**params, key: v}, (name, key, v))), key: v}
                                            for v in values if v != base]
    return _plain(row), _plain(fitted.history), _plain(own)


def search_of(m, fitted: Fitted, task: Task) -> str:
    """A row's ``search``: the fit's own words, else its method's; with no validation image
    (support_only) and a method that chooses on validation, the one value per hyper-parameter
    that the protocol's switch gives and, for a trained one, its first learning rate and last epoch."""
    if fitted.search:
        return fitted.search
    if task.has_validation or m.search.startswith("none"):
        return m.search
    return f"{NO_VALIDATION}: switches.support_only's values" + (", the first lr, the last epoch" if m.trained else "")


def environment() -> dict:
    """What a fit depends on besides its inputs: the kit's code and the numeric libraries' versions
    and threads (the last bits of a fit, see encoders.device.numerics)."""
    import numpy
    import sklearn

    from ..store import code_hash

    code = code_hash(sorted(Path(__file__).resolve().parents[1].rglob("*.py")))
    versions = {"torch": torch.__version__, "numpy": numpy.__version__, "sklearn": sklearn.__version__,
                "threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return {"code": code, "versions": versions}


def cells_key(inp, cfg: dict, names: list[str]) -> str:
    """The key of a run's finished cells: everything a cell's rows depend on."""
    from ..store import cache_key

    return cache_key({"inputs": inp.fingerprint(), "cfg": cfg, "methods": names, **environment()})


def _plain(value):
    """``value`` as JSON gives it back (numpy and torch scalars as Python numbers, tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _write_cell(folder: Path, k: int, seed: int | None, cell: list[tuple[dict, list, dict]]) -> None:
    from ..store import write_part

    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([(row["method"], json.dumps(row), json.dumps(history), json.dumps(own)) for row, history, own in cell],
                         columns=CELL_COLUMNS)
    write_part(folder / f"cell-{k}-{seed}.parquet", frame)


def _finished_cells(folder: Path, here: dict) -> dict[tuple[int, int | None], list[tuple[dict, list, dict]]]:
    """{(K, seed): [(row, history, tables) per method]} of the cells already written to ``folder`` that
    hold a row of every method fitted there (``here``)."""
    from ..store import read_parts

    done = {}
    for frame in read_parts(folder, CELL_COLUMNS, "K x seed cells", "cell-*.parquet").values():
        cell = [(json.loads(r), json.loads(h), json.loads(t)) for r, h, t in zip(frame["row"], frame["history"], frame["tables"])]
        if not cell:
            continue
        seed = cell[0][0]["seed"]
        key = (int(cell[0][0]["shots"]), None if seed is None else int(seed))
        if [row["method"] for row, _, _ in cell] == here.get(key):
            done[key] = cell
    return done
