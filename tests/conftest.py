import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import save_tiny_model, write_squad  # noqa: E402


@pytest.fixture(scope="session")
def squad_file(tmp_path_factory) -> Path:
    return write_squad(tmp_path_factory.mktemp("data") / "tiny-squad.json")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny-bert")


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNLEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from threads; one keeps the suite polite on a 2-core machine."""
    import torch

    torch.set_num_threads(1)
