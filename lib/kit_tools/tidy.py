"""Executed notebooks that differ only in their timings.

Two executions of the same notebook on the same inputs differ in more than their timestamps:
papermill gives the cell it injects (the run's parameters) a random id, and every progress
widget (tqdm under Jupyter) is a widget model with a random id, written into the outputs and the
notebook's widget state. ``tidy`` names the injected cell ``injected-parameters``, drops the
widget models no output displays, and renames the others ``0000...0``, ``0000...1``, ... in the
order the outputs display them, so what is left between two runs is timings (cell execution
times, papermill's durations, the rates and elapsed times the progress bars print). A progress
bar's plain-text form (what a reader without the widget state sees, e.g. on GitHub) is written
when the bar starts ("0%| 0/64"); ``tidy`` replaces it by the bar's final state from the widget
state ("100%|##########| 64/64 [00:03<00:00]"), so a finished stage does not read as one that did nothing.

    python -m kit_tools.tidy NOTEBOOK.ipynb [...]   # in place, atomically

``dvc.yaml`` runs it after each papermill stage, ``make notebook-outputs`` after each notebook.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

INJECTED_ID = "injected-parameters"  # papermill tags the cell it adds with this name too
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
VIEW = "application/vnd.jupyter.widget-view+json"


def tidy(nb: dict) -> dict:
    """``nb`` (a notebook as JSON) with deterministic cell and widget ids. Widget models that no
    output displays (a progress bar that closed itself) leave the widget state: nothing can show
    them, and only their random ids could order them. The others are renamed in the order the
    outputs display them, following each model's references (``IPY_MODEL_<id>``) in key order, so
    the names depend on neither the random ids nor the timings."""
    for cell in nb.get("cells", []):
        if INJECTED_ID in (cell.get("metadata") or {}).get("tags", []):
            cell["id"] = INJECTED_ID
    widgets = (nb.get("metadata") or {}).get("widgets") or {}
    state = (widgets.get(WIDGET_STATE) or {}).get("state") or {}
    if not state:
        return nb
    order: list[str] = []

    def visit(model: str) -> None:
        if model in state and model not in order:
            order.append(model)
            for ref in re.findall(r"IPY_MODEL_([0-9A-Za-z-]+)", json.dumps(state[model], sort_keys=True)):
                visit(ref)

    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            view = (out.get("data") or {}).get(VIEW)
            if view:
                visit(view.get("model_id"))
    for cell in nb.get("cells", []):
        for out in cell.get("outputs") or []:
            view = (out.get("data") or {}).get(VIEW)
            final = view and final_text(state, view.get("model_id"))
            if final:
                out["data"]["text/plain"] = final
    widgets[WIDGET_STATE]["state"] = {m: state[m] for m in order}
    if not order:
        del nb["metadata"]["widgets"]
        return nb
    width = max(len(m) for m in order)
    names = {old: f"{n:0{width}x}" for n, old in enumerate(order)}
    pattern = re.compile("|".join(re.escape(m) for m in sorted(order, key=len, reverse=True)))
    return json.loads(pattern.sub(lambda m: names[m.group(0)], json.dumps(nb, ensure_ascii=False)))


def final_text(state: dict, model: str | None) -> str | None:
    """A tqdm bar's last state as tqdm prints it in text: the HTML before the bar (description and
    share done), a 10-character bar from the progress model, the HTML after it (counts, times);
    None for another widget."""
    box = (state.get(model) or {}).get("state") or {}
    parts = [(state.get(ref.removeprefix("IPY_MODEL_")) or {}) for ref in box.get("children") or []]
    names = [p.get("model_name") for p in parts]
    if names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (p.get("state") or {} for p in parts)
    share = (bar.get("value") or 0) / bar["max"] if bar.get("max") else 0.0
    filled = int(share * 10)
    return html.unescape(f"{left.get('value', '')}|{'#' * filled}{' ' * (10 - filled)}|{right.get('value', '')}").replace("\xa0", " ").replace("\u2007", " ")


def skip_iri_grammar() -> None:
    """Leave out jsonschema's optional IRI format checkers before nbformat (which imports
    jsonschema) is imported: rfc3987-syntax builds their Lark grammars at import, about 0.7 s per
    process (python-jsonschema/jsonschema#1428), and no notebook schema uses the ``iri`` formats.
    jsonschema imports that package under ``suppress(ImportError)``; a ``None`` entry in
    ``sys.modules`` makes the import raise ImportError. A process that already imported it keeps it."""
    sys.modules.setdefault("rfc3987_syntax", None)


def tidy_file(path: Path) -> Path:
    skip_iri_grammar()
    import nbformat

    from siglip_adapter.atomic import write_atomic

    path = Path(path)
    nb = tidy(json.loads(path.read_text()))
    text = nbformat.writes(nbformat.from_dict(nb))  # the writer's own layout (sorted keys, indent 1)
    return write_atomic(path, lambda tmp: tmp.write_text(text if text.endswith("\n") else text + "\n"))


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().split("\n\n")[2], file=sys.stderr)
        return 2
    for p in paths:
        tidy_file(Path(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
