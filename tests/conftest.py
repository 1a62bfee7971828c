"""Shared test setup: one CPU thread (two are slower on the CI machine), paths to ../shared."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRDEPLOY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set SRDEPLOY_SHARED)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _export_cache(tmp_path_factory):
    """On-the-fly exports (runtime.ort.cached_export) go to a per-session folder, not ~/.cache."""
    os.environ["SRDEPLOY_CACHE_DIR"] = str(tmp_path_factory.mktemp("srdeploy-cache"))
    yield
    os.environ.pop("SRDEPLOY_CACHE_DIR", None)
