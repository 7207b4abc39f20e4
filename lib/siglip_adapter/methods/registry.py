"""The methods' registry: each method module declares itself here, and everything that lists
methods reads it (the parameter schema, ``methods.run``, Table I's order and labels, the ranking,
the figures, the cards and ``predict``).

A method is declared once, beside its maths, with the decorator ``method`` (after timm's
``register_model``: the module is the only place that names it)::

    class Params(MethodParams):            # its parameters: the schema of ``methods.<name>``
        theta: Grid
        beta: WeightGrid

    @method("tip_adapter_wide", params=Params, score=score_cache, label="Tip-Adapter (wide grid)",
            kind="training-free", order=31)
    def fit(task, params): ...             # params: the merged ``methods.<name>`` as a dict

``kind`` says where it runs: ``zero-shot`` methods in 03_zero_shot (all of them: Table I's first
columns), the ``training-free`` and ``trained`` ones that ``methods.run`` names in 04_adapter and
05_trainable. ``order`` places it in tables and legends (smaller first). ``paper`` marks the
paper's own methods (drawn thick, named in the stage metrics). ``start`` names a method whose
validation choice (or search: Tip-Adapter-F) this one starts from; its parameters reach the method as ``start``. ``search`` says in a few words how it chooses (its rows
also give ``candidates``: how many settings the choice compared, ``Fitted.candidates``). Three hooks for methods that are not fitted at every K and
seed on the shots alone (``loop.method_rows``): ``cells(cfg, inputs, params)`` lists the (K, seed)
cells it is fitted at (zero-shot: K = 0 and no seed); ``query_captions``: its ``score`` also takes
the scored images' captions; ``uses_test(params)``: it is given the test split (the authors'
trainable model, which chooses on it: its rows say ``selected_on: test``). And two for what a
method reports beside its rows, in the same loop: ``tables={name: make(cfg, k, task, fitted,
test, params) -> rows}`` (the adapter's sensitivity grid) and ``variants={table: (parameter,
values)}``: the method refitted at each value of one parameter, every choice again on validation
(the adapter's text keys: captions, class names, none).

Discovery: every module of this package is imported (``discover``), and the modules a run names in
``methods.modules`` (dotted names on ``sys.path``: a method kept outside the kit). This module
imports no torch; importing the method modules does.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Literal

from ..schema import Section

KINDS = ("zero-shot", "training-free", "trained")
Kind = Literal["zero-shot", "training-free", "trained"]


ViewUse = Literal["none", "mean", "samples", "first"]


class MethodParams(Section):
    """A method's parameters (``methods.<name>`` of the params files): subclass it with the
    method's keys; unknown keys, wrong types and values out of range are refused with the file and
    the key at fault (``config.load_config``). Every method has ``views``: how it takes the shots'
    augmented views where the run has some (``shot_views.n`` > 0; ``loop.Task.viewed``)."""

    views: ViewUse = "none"


@dataclass(frozen=True)
class Method:
    name: str
    fit: Callable  # fit(task, params: dict) -> Fitted
    score: Callable  # score(state, chosen, images[, captions]) -> logits
    params: type[MethodParams]
    label: str  # in tables, legends and cards
    kind: Kind
    order: float  # place in tables and legends: smaller first
    paper: bool = False  # one of the paper's own methods
    start: str | None = None  # the method whose validation choice (or search) this one starts from
    module: str = ""  # the module that declared it
    cells: Callable | None = None  # cells(cfg, inputs, params) -> [(K, seed or None)]; None: every K and seed
    query_captions: bool = False  # score(state, chosen, images, captions)
    uses_test: Callable | None = None  # uses_test(params) -> bool: given the test split
    tables: dict | None = None  # {table: make(cfg, k, task, fitted, test, params) -> [row]}
    variants: dict | None = None  # {table: (parameter, values)}; the first value is the method's default
    search: str = "grid on validation"  # how it chooses its hyper-parameters (its rows' ``search``; Table I's methods section)

    @property
    def trained(self) -> bool:
        return self.kind == "trained"

    @property
    def in_kit(self) -> bool:
        return self.module.startswith(f"{__package__}.")


METHODS: dict[str, Method] = {}


def method(name: str, *, score: Callable, params: type[MethodParams] = MethodParams, label: str | None = None,
           kind: Kind = "training-free", order: float = 1000.0, paper: bool = False, start: str | None = None,
           cells: Callable | None = None, query_captions: bool = False, uses_test: Callable | None = None, tables: dict | None = None,
           variants: dict | None = None, search: str = "grid on validation"):
    """Declare the method ``name`` with its ``fit`` (the decorated function; see the module's docstring)."""
    def deco(fit):
        _add(Method(name, fit, score, params, label or name, kind, order, paper, start, getattr(fit, "__module__", "") or "", cells,
                    query_captions, uses_test, tables, variants, search))
        return fit

    return deco


def _add(m: Method) -> None:
    if m.kind not in KINDS:
        raise ValueError(f"method '{m.name}' ({m.module}): kind must be one of {list(KINDS)}, got {m.kind!r}")
    if not (isinstance(m.params, type) and issubclass(m.params, MethodParams)):
        raise TypeError(f"method '{m.name}' ({m.module}): params must be a subclass of methods.registry.MethodParams")
    old = METHODS.get(m.name)
    if old is not None and old.module != m.module:
        raise ValueError(f"method '{m.name}' is declared twice: in {old.module} and in {m.module}")
    METHODS[m.name] = m


def register(name: str, score: Callable, start: str | None = None, trained: bool = False):
    """A method declared with its ``score`` only (a test's or a notebook's quick method): no
    parameters of its own, its name as label, after the kit's methods."""
    return method(name, score=score, start=start, kind="trained" if trained else "training-free")


_discovered = False


def discover(modules: tuple[str, ...] | list[str] = ()) -> dict[str, Method]:
    """The registry after importing every module of this package (once) and ``modules`` (the dotted
    names of a run's ``methods.modules``; an import failure propagates)."""
    global _discovered
    if not _discovered:
        package = importlib.import_module(__package__)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{info.name}")
        _discovered = True
    for name in modules:
        importlib.import_module(name)
    return METHODS


def get(name: str) -> Method:
    """A method by name (discovering the kit's methods on first use)."""
    if name not in METHODS:
        discover()
    if name not in METHODS:
        from ..config import did_you_mean

        raise ValueError(f"unknown method '{name}'{did_you_mean(name, sorted(METHODS))}; known: {sorted(METHODS)}")
    return METHODS[name]


def ordered(names=None) -> list[str]:
    """``names`` (default every declared method) in table order: by ``order``, then by name; names
    no module declares (rows of an older run) last, by name."""
    discover()
    names = list(METHODS) if names is None else list(dict.fromkeys(names))
    known = sorted((n for n in names if n in METHODS), key=lambda n: (METHODS[n].order, n))
    return known + sorted(n for n in names if n not in METHODS)


def label(name: str) -> str:
    """A method's label in tables and legends (its name for one no module declares)."""
    discover()
    return METHODS[name].label if name in METHODS else name


def paper_methods() -> list[str]:
    """The paper's own methods, in table order."""
    return [n for n in ordered() if METHODS[n].paper]


def few_shot(name: str) -> bool:
    """Whether a method learns from the shots (every kind but zero-shot; True for one no module declares)."""
    discover()
    return name not in METHODS or METHODS[name].kind != "zero-shot"


def runnable(extra_modules=()) -> dict[str, Method]:
    """The methods ``methods.run`` may name: the kit's and those of ``extra_modules`` that 04_adapter
    or 05_trainable run (every zero-shot method runs in 03_zero_shot)."""
    return {n: m for n, m in for_params(extra_modules).items() if m.kind != "zero-shot"}


def for_params(extra_modules=()) -> dict[str, Method]:
    """The methods whose parameters a run's ``methods`` section holds: the kit's and ``extra_modules``'."""
    discover(extra_modules)
    return {n: m for n, m in METHODS.items() if m.in_kit or m.module in extra_modules}

