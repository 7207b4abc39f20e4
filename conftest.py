"""Notebook tests (nbval) run the six notebooks in order under the smoke overlay, from an empty
build/smoke/, so the stored outputs they are compared with are those of a first run."""

import os
import shutil
from pathlib import Path

# Inherited by the notebook kernels: progress bars and load chatter would differ run to run.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_finish(session):
    if any(str(item.fspath).endswith(".ipynb") for item in session.items):
        shutil.rmtree(Path(__file__).parent / "build" / "smoke", ignore_errors=True)
