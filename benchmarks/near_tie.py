"""The near-tie rule of DESIGN.md §5 for whole-network comparisons on the torch path.

NLSN hashing is an argmax: where two rotated projections nearly tie, rounding on another path can
flip a position's bucket, a real discontinuity of the network rather than an error. So a comparison
captures every attention block's hash codes on both paths first; where they differ, the reference is
re-run forced to the other path's codes, and that forced comparison must meet the floor.

    row = compare_paths(model, run_kernels, model, run_reference, x, floor_db=100, peak=255)

``run_kernels`` is the path under test, ``run_reference`` the reference; both are callables
``run(model, x) -> y`` (e.g. one wraps ``plugins.kernels.reference_only()``). The two models may differ
(an fp16 copy against the fp32 original).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from benchmarks.common import lsh_min_margin
from models.nlsn import NonLocalSparseAttention
from runtime.metrics import psnr

NEAR_TIE = 1e-5  # smallest relative argmax gap under which a bucket flip counts as a near-tie


def _blocks(model: torch.nn.Module) -> list[NonLocalSparseAttention]:
    return [m for m in model.modules() if isinstance(m, NonLocalSparseAttention)]


@contextlib.contextmanager
def _patched_hash_codes(model, make):
    """Replace each block's hash_codes with make(block, original) for the duration (instance attribute)."""
    blocks = _blocks(model)
    saved = [block.__dict__.get("hash_codes") for block in blocks]  # an enclosing patch, if any
    for block in blocks:
        block.hash_codes = make(block, block.hash_codes)
    try:
        yield
    finally:
        for block, previous in zip(blocks, saved):
            if previous is None:
                del block.hash_codes
            else:
                block.hash_codes = previous


@contextlib.contextmanager
def recorded_codes(model):
    """Yields a list that receives every attention block's hash codes, in call order."""
    codes: list[torch.Tensor] = []

    def make(_block, original):
        def hash_codes(q, buckets):
            out = original(q, buckets)
            codes.append(out.clone())
            return out
        return hash_codes

    with _patched_hash_codes(model, make):
        yield codes


@contextlib.contextmanager
def forced_codes(model, codes: list[torch.Tensor]):
    """Every attention block call uses the next of ``codes`` (recorded on another path) instead of hashing."""
    pending = list(codes)

    def make(_block, _original):
        def hash_codes(q, buckets):
            if not pending:
                raise RuntimeError("forced_codes: more hash calls than recorded codes")
            return pending.pop(0).to(q.device)
        return hash_codes

    with _patched_hash_codes(model, make):
        yield


def compare_paths(model_a, run_a: Callable, model_b, run_b: Callable, x: torch.Tensor, *, floor_db: float,
                  peak: float = 1.0) -> dict[str, Any]:
    """PSNR of ``run_a(model_a, x)`` against the reference ``run_b(model_b, x)`` (peak ``peak``; the
    models may be one and the same), with the near-tie rule applied.

    Returns a row: psnr_db, floor_db, flipped (positions whose codes differ), lsh_margin (smallest
    relative argmax gap on the reference, None unless codes differ), forced_psnr_db (only when codes
    differ: the reference forced to path a's codes), passed, note."""
    with torch.no_grad():
        with recorded_codes(model_a) as codes_a:
            ya = run_a(model_a, x)
        with recorded_codes(model_b) as codes_b:
            yb = run_b(model_b, x)
        flipped = sum(int((a != b).sum()) for a, b in zip(codes_a, codes_b))
        row: dict[str, Any] = {"psnr_db": psnr(ya, yb, peak), "floor_db": floor_db,
                               "flipped": flipped, "lsh_margin": None}
        if not flipped:
            row["passed"] = row["psnr_db"] >= floor_db
            row["note"] = "same hash codes" if codes_a else "no LSH"
            return row
        row["lsh_margin"] = lsh_min_margin(model_b, x)
        with forced_codes(model_b, codes_a):
            forced = run_b(model_b, x)
    row["forced_psnr_db"] = psnr(ya, forced, peak)
    near = row["lsh_margin"] is not None and row["lsh_margin"] < NEAR_TIE
    if row["psnr_db"] >= floor_db:
        row["passed"], row["note"] = True, f"{flipped} positions flipped, above the floor anyway"
    else:
        row["passed"] = near and row["forced_psnr_db"] >= floor_db
        row["note"] = (f"near-tie: {flipped} positions flipped, forced parity {row['forced_psnr_db']:.1f} dB" if near
                       else f"{flipped} positions flipped without a near-tie (margin {row['lsh_margin']:.1e})")
    return row
