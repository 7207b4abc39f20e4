"""Executed notebooks differ only in their timings (kit_tools.tidy)."""

import copy
import json
import re
import uuid

import pytest

from kit_tools.tidy import INJECTED_ID, VIEW, WIDGET_STATE, tidy


def _run_like(seed: int) -> dict:
    """A notebook as one execution leaves it: a random injected-cell id, a progress bar whose
    models have random ids (an HBox showing a layout and two labels), and a closed bar's orphan
    models; the widget state's keys sorted, as nbformat writes them."""
    rnd = uuid.UUID(int=seed * 7919 + 1).hex[:8]
    ids = {name: uuid.uuid5(uuid.NAMESPACE_DNS, f"{seed}-{name}").hex for name in ("box", "layout", "left", "right", "orphan")}
    ref = lambda n: f"IPY_MODEL_{ids[n]}"  # noqa: E731
    state = {ids["box"]: {"model_name": "HBoxModel", "state": {"children": [ref("left"), ref("right")], "layout": ref("layout")}},
             ids["layout"]: {"model_name": "LayoutModel", "state": {}},
             ids["left"]: {"model_name": "HTMLModel", "state": {"value": "cells: "}},
             ids["right"]: {"model_name": "HTMLModel", "state": {"value": f" 4/4 [00:0{seed}<00:00]"}},
             ids["orphan"]: {"model_name": "HTMLModel", "state": {"value": "closed bar"}}}
    cells = [{"id": rnd, "cell_type": "code", "metadata": {"tags": [INJECTED_ID]}, "outputs": [], "source": "x = 1"},
             {"id": "fixed", "cell_type": "code", "metadata": {}, "source": "run()",
              "outputs": [{"output_type": "display_data", "data": {VIEW: {"model_id": ids["box"], "version_major": 2}}}]}]
    return {"cells": cells, "metadata": {"widgets": {WIDGET_STATE: {"state": dict(sorted(state.items())), "version_major": 2}}}}


def _without_timings(nb: dict) -> str:
    return re.sub(r"\[\d\d:\d\d<\d\d:\d\d[^\]]*\]", "[time]", json.dumps(nb, sort_keys=True))


def test_two_runs_differ_only_in_timings_once_tidied():
    a, b = _run_like(1), _run_like(2)
    assert _without_timings(a) != _without_timings(b)  # random ids before
    assert _without_timings(tidy(copy.deepcopy(a))) == _without_timings(tidy(copy.deepcopy(b)))
    t = tidy(a)
    assert t["cells"][0]["id"] == INJECTED_ID
    state = t["metadata"]["widgets"][WIDGET_STATE]["state"]
    assert len(state) == 4 and "closed bar" not in json.dumps(state)  # the orphan left; what is displayed stays
    box = t["cells"][1]["outputs"][0]["data"][VIEW]["model_id"]
    assert state[box]["model_name"] == "HBoxModel" and all(r[len("IPY_MODEL_"):] in state for r in state[box]["state"]["children"])


def test_a_notebook_without_displayed_widgets_loses_its_widget_state():
    nb = _run_like(1)
    nb["cells"][1]["outputs"] = []
    assert "widgets" not in tidy(nb)["metadata"]


def test_papermill_twice_gives_the_same_notebook_but_its_timings(tmp_path, monkeypatch):
    """A real papermill execution (a parameter injected, a tqdm progress bar as a widget) twice:
    after ``tidy_file`` the two files differ only in timestamps, durations and the bar's times."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    from kit_tools.tidy import tidy_file

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nimport time\nfor i in tqdm(range(n), desc='cells'):\n    time.sleep(0.01)\nprint(n)")]
    src = tmp_path / "in.ipynb"
    nbformat.write(nb, src)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(str(src), str(out), parameters={"n": 5}, kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
        runs.append(out.read_text())
        tidy_file(out)
        runs.append(out.read_text())

    def timeless(text: str) -> str:
        text = re.sub(r'"(iopub[\w.]+|shell\.execute_reply|start_time|end_time)": "[^"]*"', '"t"', text)
        text = re.sub(r'"duration": [0-9.e-]+', '"duration": 0', text)
        text = re.sub(r'"(input|output)_path": "[^"]*"', '"p"', text)
        return re.sub(r"\d\d:\d\d(<|&lt;)\d\d:\d\d(,[^\]]*)?", "time", text)  # the bar's elapsed, left and rate (tqdm pads it with U+2007)

    raw_a, tidy_a, raw_b, tidy_b = runs
    assert timeless(raw_a) != timeless(raw_b)  # papermill's cell id and the widgets' ids are random
    assert VIEW in tidy_a and INJECTED_ID in tidy_a
    assert timeless(tidy_a) == timeless(tidy_b)
    # The bar's plain text (what GitHub shows) reads its final state, not the "0%| 0/5" it started as.
    done = json.loads(tidy_a)["cells"][-1]["outputs"]
    texts = ["".join(o["data"]["text/plain"]) for o in done if VIEW in (o.get("data") or {})]
    assert texts and all(t.startswith("cells: 100%|##########| 5/5") for t in texts), texts


def test_a_stage_notebook_runs_papermill_then_tidy_and_stops_its_kernel_at_once(tmp_path, monkeypatch):
    """``kit_tools.execute`` (what every notebook stage runs): papermill's command line with its
    parameters, the output tidied, and the kernel stopped without its exit (nbclient's
    ``shutdown_kernel="immediate"``): an ``atexit`` hook the notebook registers never runs, where a
    plain papermill run (graceful shutdown) runs it."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    from kit_tools import execute

    monkeypatch.chdir(tmp_path)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import atexit, pathlib\natexit.register(pathlib.Path('exited').write_text, str(n))")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook("in.ipynb", "plain.ipynb", parameters={"n": 4}, kernel_name="python3", progress_bar=False)
    assert (tmp_path / "exited").read_text() == "4"  # the hook does run on a graceful exit
    (tmp_path / "exited").unlink()
    assert execute.main(["in.ipynb", "out.ipynb", "-p", "n", "5", "--no-progress-bar"]) == 0
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert INJECTED_ID in json.dumps(out) and "n = 5" in "".join(out["cells"][1]["source"])
    assert not (tmp_path / "exited").exists()
