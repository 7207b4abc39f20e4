"""The methods' registry: each method module declares itself here, and everything that lists
methods reads it (the parameter schema, ``methods.run``, Table I's order and labels, the ranking,
the figures, the cards and ``predict``).

A method is declared once, beside its maths, with the decorator ``method`` (after timm's
``register_model``: the module is the only place that names it)::

    class Params(MethodParams):            # its parameters: the schema of ``methods.<name>``
        theta: Grid
        beta: WeightGrid

    @method("tip_adapter", params=Params, score=score_cache, label="Tip-Adapter",
            kind="training-free", order=30)
    def fit(task, params): ...             # params: the merged ``methods.<name>`` as a dict

``kind`` says where it runs: ``zero-shot`` and ``training-free`` methods in 04_adapter (zero-shot
also in 03_zero_shot), ``trained`` ones in 05_trainable. ``order`` places it in tables and legends
(smaller first). ``paper`` marks the paper's own methods (drawn thick, named in the stage metrics).
``start`` names a method whose validation choice this one starts from. A method whose rows a stage
builds by itself (``fit`` None: zero-shot with captions, until the stages share one loop) is
declared for its parameters, label and place only, and is not a choice of ``methods.run``.

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


class MethodParams(Section):
    """A method's parameters (``methods.<name>`` of the params files): subclass it with the
    method's keys; unknown keys, wrong types and values out of range are refused with the file and
    the key at fault (``config.load_config``)."""


@dataclass(frozen=True)
class Method:
    name: str
    fit: Callable | None  # fit(task, params: dict) -> Fitted; None: declared only (see the module's docstring)
    score: Callable | None  # score(state, chosen, images) -> logits
    params: type[MethodParams]
    label: str  # in tables, legends and cards
    kind: Kind
    order: float  # place in tables and legends: smaller first
    paper: bool = False  # one of the paper's own methods
    start: str | None = None  # the method whose validation choice this one starts from
    module: str = ""  # the module that declared it

    @property
    def trained(self) -> bool:
        return self.kind == "trained"

    @property
    def in_kit(self) -> bool:
        return self.module.startswith(f"{__package__}.")


METHODS: dict[str, Method] = {}


def method(name: str, *, params: type[MethodParams] = MethodParams, score: Callable | None = None, label: str | None = None,
           kind: Kind = "training-free", order: float = 1000.0, paper: bool = False, start: str | None = None):
    """Declare the method ``name`` with its ``fit`` (the decorated function; see the module's docstring)."""
    def deco(fit):
        _add(Method(name, fit, score, params, label or name, kind, order, paper, start, getattr(fit, "__module__", "") or ""))
        return fit

    return deco


def declare(name: str, module: str, *, params: type[MethodParams] = MethodParams, label: str | None = None,
            kind: Kind = "training-free", order: float = 1000.0, paper: bool = False) -> None:
    """Declare a method whose rows a stage builds by itself (``module``: the declaring module's
    ``__name__``): its parameters, label, kind, order and paper flag only (``fit`` None)."""
    _add(Method(name, None, None, params, label or name, kind, order, paper, None, module))


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
    """The methods ``methods.run`` may name: those of the kit and of ``extra_modules`` that have a ``fit``."""
    discover(extra_modules)
    return {n: m for n, m in METHODS.items() if m.fit is not None and (m.in_kit or m.module in extra_modules)}


def for_params(extra_modules=()) -> dict[str, Method]:
    """The methods whose parameters a run's ``methods`` section holds: the kit's and ``extra_modules``'."""
    discover(extra_modules)
    return {n: m for n, m in METHODS.items() if m.in_kit or m.module in extra_modules}

