"""The project's models against outputs of the official implementations (DESIGN.md §5: ≥ 100 dB)."""

import pytest
import torch

from conftest import GOLDEN
from golden import load_golden
from runtime.metrics import psnr_peak1

FILES = sorted(GOLDEN.glob("*.npz"))


def test_golden_files_present():
    if not GOLDEN.is_dir():
        pytest.skip(f"{GOLDEN} not found")
    assert len(FILES) == 6, f"expected 6 golden files in {GOLDEN}, found {len(FILES)}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_parity(path):
    model, x, expected, meta = load_golden(path)
    assert [k for k, _ in meta["keys"]] == list(model.state_dict()), "state_dict layout differs from official"
    with torch.no_grad():
        out = model(x)
    assert out.shape == expected.shape
    value = psnr_peak1(out, expected)
    print(f"{path.stem}: {value:.1f} dB, max abs diff {(out - expected).abs().max().item():.2e}")
    assert value >= 100.0


@pytest.mark.parametrize("path", [p for p in FILES if p.stem.startswith("nlsn")][:1], ids=lambda p: p.stem)
def test_golden_detects_wrong_rotations(path):
    """The parity check is sharp: the default seeded rotations instead of the recorded ones fail it."""
    model, x, expected, meta = load_golden(path)
    for block in model.attention_blocks():
        block.rotations.copy_(torch.randn(block.rotations.shape, generator=torch.Generator().manual_seed(7)))
    with torch.no_grad():
        assert psnr_peak1(model(x), expected) < 100.0
