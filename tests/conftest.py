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
