"""Memory: blocked CSNLN attention (== dense), the working-memory estimate and its calibration,
``--tile auto`` from a budget, out-of-memory retry, tiles too small to be worth it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import csnln
from runtime import infer, memory, tiling
from runtime.backends import TorchBackend
from runtime.metrics import psnr_peak1
from runtime.pipeline import upscale
from conftest import TINY_EDSR

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "memory.json"
TINY_CSNLN = dict(n_feats=8, depth=1, rgb_range=1)


def tiny(name: str, scale: int = 2, dtype=torch.float32, **config):
    torch.manual_seed(0)
    base = {"csnln": TINY_CSNLN, "edsr": TINY_EDSR}[name]
    return models.build(name, scale, **{**base, **config}).eval().to(dtype)


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with texture (attention has something to match), H×W×3 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 7.0
    base = 0.5 + 0.25 * np.sin(x + 2 * y)[..., None] * np.array([1.0, 0.6, -0.4])
    return np.clip(base + 0.1 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- blocked == dense

def _blocks_used(module, x) -> int:
    """How many query blocks the module's forward uses for x (checks that the test really blocks)."""
    N, _, H, W = x.shape
    if isinstance(module, csnln.NonLocalAttention):
        return -(-H * W // csnln.block_size(H * W, N * H * W * x.element_size(), module.block_bytes))
    K = (H // module.scale) * (W // module.scale)
    return -(-H // csnln.block_size(H, N * K * W * x.element_size(), module.block_bytes))


@pytest.mark.parametrize("dtype,floor", [(torch.float64, 250), (torch.float32, 100)])
@pytest.mark.parametrize("u,size,block_bytes", [
    (2, (14, 22), 3000),     # NonLocal: 308 queries in blocks of 2; cross-scale: 14 rows in blocks of 2
    (3, (15, 18), 20_000),   # blocks that do not divide L or H
    (2, (10, 8), 1),         # one query / one row per block
])
def test_attentions_blocked_equal_dense(dtype, floor, u, size, block_bytes):
    torch.manual_seed(1)
    x = torch.randn(2, 8, *size, dtype=dtype)  # batch 2: blocks must not mix samples
    for module in (csnln.NonLocalAttention(8), csnln.CrossScaleAttention(8, scale=u)):
        module = module.to(dtype).eval()
        with torch.no_grad():
            module.block_bytes = None
            dense = module(x)
            module.block_bytes = block_bytes
            assert _blocks_used(module, x) > 1
            blocked = module(x)
        assert blocked.shape == dense.shape
        scale = float(dense.abs().max())  # outputs are unbounded features: PSNR relative to their range
        assert psnr_peak1(blocked.numpy() / scale, dense.numpy() / scale) >= floor, type(module).__name__


@pytest.mark.parametrize("scale,size", [(2, (22, 14)), (3, (15, 21)), (4, (18, 10))])
def test_csnln_blocked_equals_dense(scale, size):
    """The whole network, every scale, sizes whose row and query counts are not multiples of the block."""
    net = tiny("csnln", scale, dtype=torch.float64)
    x = torch.from_numpy(image(*size)).permute(2, 0, 1)[None].double()
    with torch.no_grad():
        csnln.set_attention_block_bytes(net, None)
        dense = net(x)
        csnln.set_attention_block_bytes(net, 5000)
        blocked = net(x)
    assert psnr_peak1(blocked.numpy(), dense.numpy()) >= 250  # fp64: ~300 dB; fp32 rounding is ~150


def test_block_size_follows_the_memory_target():
    assert csnln.block_size(1000, 100, 10_000) == 100
    assert csnln.block_size(1000, 100, 50) == 1  # never zero
    assert csnln.block_size(1000, 100, None) == 1000
    assert csnln.block_size(1000, 100, 10**9) == 1000
    # The default target keeps a 192×192 CSNLN x2's in-scale scores (36864 keys) to 64 MiB per
    # block, above glibc's largest mmap threshold (32 MiB): see ATTENTION_BLOCK_BYTES.
    rows = csnln.block_size(36864, 36864 * 4, csnln.ATTENTION_BLOCK_BYTES)
    assert 32 << 20 < rows * 36864 * 4 <= csnln.ATTENTION_BLOCK_BYTES


# ----------------------------------------------------------------------------- the estimate

def test_parse_and_format_sizes():
    assert memory.parse_size("4G") == 4 << 30
    assert memory.parse_size("512M") == 512 << 20
    assert memory.parse_size("1.5GiB") == 3 << 29
    assert memory.parse_size("800mb") == 800 << 20
    assert memory.parse_size("123456") == 123456
    for bad in ("", "G", "-1G", "4X", "0", "four"):
        with pytest.raises(ValueError):
            memory.parse_size(bad)
    assert memory.format_size(3 << 29) == "1.5 GB"


def test_default_budget_is_a_share_of_available_memory():
    budget, source = memory.default_budget("cpu")
    assert budget > 0 and "RAM" in source


@pytest.mark.parametrize("name", ["nlsn", "csnln", "edsr"])
def test_estimate_grows_with_the_tile(name):
    backend = TorchBackend(models.build(name, 2, rgb_range=1))
    mm = memory.memory_model(backend)
    values = [mm.estimate(p) for p in (0, 1, 100, 10_000, 10**6)]
    assert values == sorted(values) and len(set(values)) == len(values)
    # tiles: a larger tile never needs less
    needs = [mm.estimate(memory.window_pixels(300, 200, t, 32, backend.valid_size)) for t in (8, 16, 50, 100, 0)]
    assert needs == sorted(needs)


def test_dense_csnln_is_quadratic_blocked_is_linear():
    backend = TorchBackend(models.build("csnln", 2, n_feats=32, depth=2, rgb_range=255))  # the bundled size
    blocked = memory.memory_model(backend)
    csnln.set_attention_block_bytes(backend.model, None)
    dense = memory.memory_model(backend)
    assert blocked.quadratic == 0 and dense.quadratic > 0
    # 192×192 LR: the dense [L, L] scores and their softmax are ~11 GB, as measured in the issue
    assert 10e9 < dense.estimate(192 * 192) < 13e9
    assert blocked.estimate(192 * 192) < 1.5e9


def _measurements():
    if not RESULTS.is_file():
        pytest.skip(f"{RESULTS} not found (python -m benchmarks.memory --out-dir benchmarks/results)")
    return [r for r in json.loads(RESULTS.read_text())["rows"] if r.get("status") == "ok"]


#: the estimate (working memory above the loaded process) against the committed measurement.
#: Wide because peak RSS includes glibc heap fragmentation, which depends on the allocation
#: history: one configuration (CSNLN 128², tile 64) measured 537 MiB in one run, 242 in another.
#: Untiled CSNLN (the quadratic case the budget is for) fits within 0.95-1.25.
CALIBRATION_TOLERANCE = (0.5, 2.0)


def test_estimate_is_calibrated_by_the_committed_benchmark():
    from runtime.pipeline import load_upscaler
    rows = _measurements()
    assert {r["model"] for r in rows} >= {"csnln", "nlsn"}
    for r in rows:
        backend = load_upscaler(r["model"], r["scale"])
        if r["model"] == "csnln" and r["attention"] == "dense":
            csnln.set_attention_block_bytes(backend.model, None)
        h = w = r["size"]
        pixels = memory.window_pixels(h, w, r["tile"], 32, backend.valid_size)
        estimate = memory.image_bytes(h, w, r["scale"]) + memory.memory_model(backend).estimate(pixels)
        ratio = estimate / (r["working_mib"] * 2**20)
        lo, hi = CALIBRATION_TOLERANCE
        assert lo <= ratio <= hi, f"{r['model']} {r['attention']} {h}² tile {r['tile']}: estimate/measured {ratio:.2f}"


def test_committed_benchmark_meets_the_target():
    """CSNLN x2 on 192×192 untiled, blocked: peak RSS ≤ 1.5 GB and no slower than dense (same run)."""
    rows = {(r["model"], r["size"], r["attention"], r["tile"]): r for r in _measurements()}
    blocked, dense = rows[("csnln", 192, "blocked", 0)], rows[("csnln", 192, "dense", 0)]
    assert blocked["peak_rss_mib"] * 2**20 <= 1.5e9
    assert dense["peak_rss_mib"] > 5 * blocked["peak_rss_mib"]
    assert blocked["seconds"] <= dense["seconds"] * 1.05


# ----------------------------------------------------------------------------- auto tile

@pytest.fixture(scope="module")
def bundled_csnln():
    from runtime.pipeline import load_upscaler
    return load_upscaler("csnln", 2)


def test_auto_tile_is_the_largest_within_budget(bundled_csnln):
    b = bundled_csnln
    mm = memory.memory_model(b)
    h, w, pad = 700, 500, 32
    need = lambda t: memory.image_bytes(h, w, 2) + mm.estimate(memory.window_pixels(h, w, t, pad, b.valid_size))  # noqa: E731
    assert memory.choose_tile(h, w, b, need(0), pad).tile == 0  # the whole image fits exactly
    budget = need(0) // 3
    choice = memory.choose_tile(h, w, b, budget, pad)
    assert 0 < choice.tile < max(h, w) and choice.estimate == need(choice.tile) <= budget
    assert need(choice.tile + 1) > budget or tiling.split_even(h, choice.tile + 1) == tiling.split_even(h, choice.tile)
    assert f"tile auto: {choice.tile} " in choice.note and "budget" in choice.note
    # a larger budget never gives a smaller tile
    tiles = [memory.choose_tile(h, w, b, budget * k // 4, pad).tile or max(h, w) for k in (2, 3, 4, 6, 8)]
    assert tiles == sorted(tiles)


def test_auto_tile_budgets_of_the_issue(bundled_csnln):
    """24 GB holds any photo-sized CSNLN x2 input whole; 4 GB needs tiles from 1024² on."""
    big, small = memory.parse_size("24G"), memory.parse_size("4G")
    assert memory.choose_tile(512, 512, bundled_csnln, big, 32).tile == 0
    assert memory.choose_tile(512, 512, bundled_csnln, small, 32).tile == 0
    assert 0 < memory.choose_tile(1024, 1024, bundled_csnln, small, 32).tile < 1024


def test_budget_too_small_is_refused_in_one_line(bundled_csnln):
    with pytest.raises(memory.TilingError, match=r"too small .* raise --max-memory") as e:
        memory.choose_tile(400, 400, bundled_csnln, 1 << 20, 32)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- tiny tiles

def test_padding_overhead():
    assert memory.padding_overhead(100, 100, 0, 32) == 1
    assert memory.padding_overhead(1000, 1000, 1000, 32) == 1
    # interior tiles of 100 with 32 of context on each side: ~(164/100)²
    assert 2.4 < memory.padding_overhead(1000, 1000, 100, 32) < 2.7
    # the issue's case: --tile 1 on 64×48 ran ~120 times longer
    assert memory.padding_overhead(48, 64, 1, 32) > 1000


def test_tiny_tiles_are_refused_small_ones_warned():
    with pytest.raises(memory.TilingError, match=r"--tile 1 .* 64x48 .* use a larger --tile \(e.g. \d+\)"):
        memory.check_tile(48, 64, 1, 32)
    assert "a larger --tile is faster" in memory.check_tile(1000, 1000, 20, 32)
    assert memory.check_tile(1000, 1000, 128, 32) is None
    assert memory.check_tile(48, 64, 1, 0) is None  # no context, no overhead


def test_cli_refuses_a_tiny_tile_before_computing(tmp_path, capsys):
    from PIL import Image
    src = tmp_path / "small.png"
    Image.fromarray((image(48, 64) * 255).astype(np.uint8)).save(src)
    torch.manual_seed(0)
    ckpt = tmp_path / "edsr_x2.pt"
    torch.save(models.build("edsr", 2, **TINY_EDSR).state_dict(), ckpt)
    out = tmp_path / "out.png"
    assert infer.main(["-i", str(src), "-o", str(out), "--weights", str(ckpt), "--tile", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error: --tile 1 with --tile-pad 32 on a 64x48 image" in err, err
    assert not out.exists()
    # --tile auto (the default) with a budget says which tile it took, in one line
    assert infer.main(["-i", str(src), "-o", str(out), "--weights", str(ckpt), "--max-memory", "2G"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "tile auto" in line]
    assert len(notes) == 1 and "whole image" in notes[0], notes
    # a folder of same-sized images: the plan is said once, every image is written
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray((image(48, 64, seed=len(name)) * 255).astype(np.uint8)).save(folder / name)
    assert infer.main(["-i", str(folder), "-o", str(tmp_path / "sr"), "--weights", str(ckpt), "--max-memory", "2G"]) == 0
    assert sum("tile auto" in line for line in capsys.readouterr().err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == ["a_x2.png", "b_x2.png", "c_x2.png"]
    with pytest.raises(SystemExit) as e:
        infer.main(["-i", str(src), "-o", str(out), "--weights", str(ckpt), "--max-memory", "lots"])
    assert e.value.code == 2 and "--max-memory: expected a size such as 4G" in capsys.readouterr().err


# ----------------------------------------------------------------------------- out-of-memory retry

class LimitedMemory(TorchBackend):
    """The environment, not the component: a real backend on a machine where any input above
    ``limit`` pixels does not fit. The pipeline's retry under test is the real one."""

    def __init__(self, model, limit: int, error=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate")):
        super().__init__(model)
        self.limit, self.error, self.calls = limit, error, []

    def __call__(self, x):
        pixels = x.shape[-2] * x.shape[-1]
        self.calls.append(pixels)
        if pixels > self.limit:
            raise self.error
        return super().__call__(x)


ORT_ALLOCATION = type("RuntimeException", (Exception,), {})(  # what onnxruntime's pybind layer raises
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
    "Name:'/MatMul' Status Message: bad allocation")


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB"),
                                   MemoryError(), ORT_ALLOCATION])
def test_out_of_memory_halves_the_tile_and_retries(error):
    net = tiny("edsr")
    img = image(40, 56)
    backend = LimitedMemory(net, limit=40 * 40, error=error)
    notes = []
    out = upscale(img, backend, tile=0, tile_pad=6, on_note=notes.append)
    # whole image (40×56) fails; tile 28 → windows up to 40×40 fit
    assert backend.calls[0] == 40 * 56 and max(backend.calls[1:]) <= 40 * 40
    assert notes == ["out of memory with the whole image; retrying with tile 28"]
    expected = upscale(img, TorchBackend(net), tile=28, tile_pad=6)
    np.testing.assert_array_equal(out, expected)


def test_out_of_memory_retry_with_progress_and_self_ensemble():
    net = tiny("edsr")
    backend = LimitedMemory(net, limit=18 * 18)  # tile 24: windows of 19×19; tile 12: 18×18
    notes, bar = [], _Bar()
    out = upscale(image(30, 30), backend, tile=24, tile_pad=4, self_ensemble=True, progress=bar, on_note=notes.append)
    assert notes == ["out of memory with tile 24; retrying with tile 12"]
    assert bar.totals == [8 * 4, 8 * 9] and bar.done == 8 * 9  # reset to the new tile count; every tile counted
    np.testing.assert_allclose(out, upscale(image(30, 30), TorchBackend(net), tile=12, tile_pad=4,
                                            self_ensemble=True), atol=1e-6)


class _Bar:
    def __init__(self):
        self.totals, self.done = [], 0

    def reset(self, total):
        self.totals.append(total)
        self.done = 0

    def update(self, n=1):
        self.done += n


def test_out_of_memory_that_halving_cannot_fix_is_one_line():
    backend = LimitedMemory(tiny("edsr"), limit=0)
    with pytest.raises(memory.OutOfMemory, match=r"out of memory on a 40x40 image with tile \d+ .*free memory") as e:
        upscale(image(40, 40), backend, tile=0, tile_pad=8)
    assert "\n" not in str(e.value)
    assert len(backend.calls) > 2  # it tried smaller tiles first


def test_other_errors_are_not_retried():
    backend = LimitedMemory(tiny("edsr"), limit=0, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        upscale(image(20, 20), backend, tile=0)
    assert len(backend.calls) == 1


def test_what_counts_as_out_of_memory():
    yes = [torch.OutOfMemoryError("x"), MemoryError(), RuntimeError("CUDA out of memory."), ORT_ALLOCATION,
           RuntimeError("[TensorRT] ERROR: 1: [defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime "
                        "(out of memory)"),
           Exception("onnxruntime: Failed to allocate memory for requested buffer of size 123"),
           OSError(12, "Cannot allocate memory")]
    no = [RuntimeError("shape mismatch"), ValueError("out of memory in a message about values"),
          OSError(28, "No space left on device"), KeyboardInterrupt()]
    assert all(memory.is_out_of_memory(e) for e in yes)
    assert not any(memory.is_out_of_memory(e) for e in no)
