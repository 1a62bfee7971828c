"""Inputs of the custom ops shaped like the networks' own, shared by the tests of every backend
(tests/test_op_backends.py, tests/test_export_ops.py, tests/test_kernels_gpu.py,
tests/test_kernels_hardening_gpu.py) and the kernel benchmarks (benchmarks/kernels.py).

Every builder takes a ``device`` (so the same shapes run on CPU in the CPU tests of the benchmark
logic) and a seed, and returns plain tensors. Queries come from ``0.5·randn`` (``flat``) or that
scaled ×20 (``peaky``, like real conv outputs): peaky queries make the softmax nearly one-hot and the
round weights nearly 0/1, which exercises the online-softmax rescale. Hash codes come from real LSH
hashing (the NLSN rule, models.nlsn.num_buckets), so buckets have realistic, uneven sizes.

:class:`OpCase` is one call of one op of the contract (models.ops.contract.OPS): its name, attributes
and float dtype, and its inputs made on demand on any device; :func:`oracle` is the float64 reference
on CPU every backend is compared with, at the DESIGN.md §5 floors (:data:`FLOORS_DB`; index outputs
exact). :func:`table_cases` lists the cases of the op × backend table.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import torch

from models import ops
from models.nlsn import KEY_EPS, num_buckets
from models.ops.contract import OPS

__all__ = ["KEY_EPS", "AttentionCase", "ATTENTION_CASES", "RELEASED_NLSA", "FOLD_CASES", "SORT_CASES",
           "FLOORS_DB", "OpCase", "sort_case", "attention_case", "fold_case", "table_cases", "oracle",
           "attention_inputs", "sorted_attention_inputs", "lsh_codes", "fold_inputs", "sort_inputs", "num_chunks"]

#: DESIGN.md §5: PSNR floors (dB, peak 1) of an op against its reference, by the dtype it runs in
FLOORS_DB = {torch.float32: 100.0, torch.float16: 60.0}


class AttentionCase(NamedTuple):
    N: int
    H: int
    W: int
    c: int
    C: int
    cs: int
    R: int
    note: str

    @property
    def id(self) -> str:
        return f"{self.N}x{self.H}x{self.W}_c{self.c}_C{self.C}_cs{self.cs}_R{self.R}"


def num_chunks(L: int, cs: int) -> int:
    return -(-L // cs)


# 1, 2 and 3 chunks, the padding path, the released NLSN block shape (c = 64, C = 256, cs = 144,
# R = 4) at real feature-map sizes, odd sizes with partial tiles everywhere, C > 256.
ATTENTION_CASES = [
    AttentionCase(1, 12, 12, 64, 256, 144, 4, "1 chunk"),
    AttentionCase(1, 16, 17, 64, 256, 144, 2, "2 chunks, padding"),
    AttentionCase(1, 18, 24, 64, 256, 144, 4, "3 chunks"),
    AttentionCase(2, 48, 40, 64, 256, 144, 4, "padding, batch 2"),
    AttentionCase(1, 64, 64, 64, 256, 144, 4, "released block, 64x64"),
    AttentionCase(1, 96, 96, 64, 256, 144, 4, "released block, 96x96"),
    AttentionCase(2, 19, 23, 20, 70, 50, 3, "odd c, C, cs"),
    AttentionCase(1, 40, 40, 16, 300, 144, 1, "C > 256, one round"),
]
# What the benchmarks time: one NLSN attention block of the released x4 model (n_feats 256).
RELEASED_NLSA = dict(c=64, C=256, cs=144, R=4)

# N, H, W, C, u of CrossScaleFold (K = (H/u)(W/u) patches of (3u)^2)
FOLD_CASES = [(1, 48, 48, 128, 2), (2, 32, 32, 128, 2), (1, 36, 36, 128, 3), (2, 10, 14, 5, 2), (3, 9, 6, 7, 3)]

# B, M, num_buckets of BucketSort: the released block at 128^2 and 48^2, odd sizes, one element
SORT_CASES = [(1, 4 * 128 * 128, 4 * 112), (2, 4 * 48 * 48, 4 * 16), (3, 1000, 7), (1, 1, 1), (4, 4 * 96 * 96, 4 * 64)]


def _generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def lsh_codes(q: torch.Tensor, cs: int, R: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """Round-offset LSH codes of q [N, L, c] as NLSN computes them (fp32): int32 [N, R·L] and the
    total bucket count R·hb (the ``num_buckets`` of BucketSort)."""
    N, L, c = q.shape
    hb = num_buckets(L, cs)  # >= 2 whenever L >= cs
    rot = torch.randn(c, R, hb // 2, device=q.device, generator=g)
    proj = torch.einsum("ntf,fri->nrti", q.float(), rot)
    codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)  # [N, R, L] in [0, hb)
    codes = codes + torch.arange(R, device=q.device).view(1, -1, 1) * hb
    return codes.reshape(N, -1).to(torch.int32), R * hb


def attention_inputs(N: int, H: int, W: int, c: int, C: int, cs: int, R: int, *, seed: int = 0,
                     dtype: torch.dtype = torch.float32, device="cuda", peaky: bool = False):
    """(q [N, L, c], v [N, L, C], codes int32 [N, R·L], num_buckets): features like conv outputs
    (``peaky``: queries ×20), codes from real LSH hashing of the fp32 queries."""
    g = _generator(device, seed)
    L = H * W
    q = 0.5 * torch.randn(N, L, c, device=device, generator=g)
    if peaky:
        q = 20 * q
    v = torch.rand(N, L, C, device=device, generator=g)
    q, v = q.to(dtype), v.to(dtype)
    codes, nb = lsh_codes(q, cs, R, g)
    return q, v, codes, nb


def sorted_attention_inputs(*args, **kwargs):
    """attention_inputs plus the reference sort: (q, v, order, rank)."""
    q, v, codes, nb = attention_inputs(*args, **kwargs)
    order, rank = ops.bucket_sort_reference(codes, nb)
    return q, v, order, rank


def fold_inputs(N: int, H: int, W: int, C: int, u: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                device="cuda", K: int | None = None, k: int | None = None):
    """(scores [N, K, H, W], patches [N, K, C, k, k]) as CSNLN makes them: K = (H/u)(W/u) patches of
    k = 3u, scores a peaky softmax over K (CSNLN's softmax_scale 10); ``K`` and ``k`` may be given for
    the op's general case. Patches of feature scale (σ 0.25), so PSNR at peak 1 measures arithmetic
    error, not output range (fp16 rounding alone of a σ-3 output would sit near 61 dB)."""
    g = _generator(device, seed)
    K = (H // u) * (W // u) if K is None else K
    k = 3 * u if k is None else k
    scores = torch.softmax(10 * torch.randn(N, K, H, W, device=device, generator=g), dim=1)
    patches = 0.25 * torch.randn(N, K, C, k, k, device=device, generator=g)
    return scores.to(dtype), patches.to(dtype)


def sort_inputs(B: int, M: int, buckets: int, *, seed: int = 0, device="cuda") -> torch.Tensor:
    """Uniform codes int32 [B, M] in [0, buckets)."""
    return torch.randint(0, buckets, (B, M), dtype=torch.int32, device=device, generator=_generator(device, seed))


# ----------------------------------------------------------------------------------- op cases

@dataclasses.dataclass(frozen=True, eq=False)
class OpCase:
    """One call of one op: ``make(device)`` returns its inputs in the contract's order."""
    op: str  # a key of models.ops.contract.OPS
    name: str
    attributes: dict[str, int | float]  # in the contract's order
    dtype: torch.dtype  # of the float inputs and outputs (BucketSort: int32 only)
    make: Callable[[str | torch.device], tuple[torch.Tensor, ...]] = dataclasses.field(repr=False)

    @property
    def floor_db(self) -> float | None:
        """PSNR floor of the float outputs (None: BucketSort, exact)."""
        return None if self.op == "BucketSort" else FLOORS_DB[self.dtype]

    def inputs(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Input name (the contract's) -> tensor on ``device``, the same seeded values on every call."""
        return dict(zip((t.name for t in OPS[self.op].inputs), self.make(device)))

    def call(self, fn: Callable, tensors) -> tuple[torch.Tensor, ...]:
        """``fn(*tensors, *attributes)`` with the outputs as a tuple (the torch ops' and the kernel
        bindings' calling convention)."""
        out = fn(*tensors, *self.attributes.values())
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def oracle(case: OpCase) -> dict[str, torch.Tensor]:
    """The reference on CPU in float64 from the very values a backend sees (fp16 inputs upcast):
    output name -> float64 tensor (int32 for index outputs)."""
    tensors = [t.double() if t.is_floating_point() else t for t in case.inputs("cpu").values()]
    spec = OPS[case.op]
    with torch.no_grad():
        outs = case.call(getattr(torch.ops.srdeploy, spec.torch_name), tensors)
    return dict(zip((t.name for t in spec.outputs), outs))


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16"}[dtype]


def sort_case(B: int, M: int, buckets: int, *, seed: int, num_buckets: int | None = None) -> OpCase:
    """Codes uniform in [0, buckets); the attribute ``num_buckets`` (default ``buckets``) may be larger."""
    nb = buckets if num_buckets is None else num_buckets
    return OpCase("BucketSort", f"sort {B}x{M} codes<{buckets} num_buckets {nb}", {"num_buckets": nb}, torch.int32,
                  lambda device: (sort_inputs(B, M, buckets, seed=seed, device=device),))


def attention_case(case: AttentionCase, *, seed: int, dtype: torch.dtype = torch.float32,
                   peaky: bool = False) -> OpCase:
    """BucketAttention on sorted LSH inputs (:func:`sorted_attention_inputs`) of an AttentionCase."""
    name = f"attention {case.id} {_dtype_name(dtype)} {'peaky' if peaky else 'flat'} ({case.note})"
    return OpCase("BucketAttention", name, {"chunk_size": case.cs, "n_hashes": case.R, "eps": KEY_EPS}, dtype,
                  lambda device: sorted_attention_inputs(*case[:7], seed=seed, dtype=dtype, device=device, peaky=peaky))


def fold_case(N: int, H: int, W: int, C: int, u: int, *, seed: int, dtype: torch.dtype = torch.float32) -> OpCase:
    """CrossScaleFold as CSNLN calls it (:func:`fold_inputs`): stride = padding = u."""
    return OpCase("CrossScaleFold", f"fold {N}x{C}x{H}x{W} u{u} {_dtype_name(dtype)}", {"stride": u, "padding": u},
                  dtype, lambda device: fold_inputs(N, H, W, C, u, seed=seed, dtype=dtype, device=device))


# The op × backend table (tests/test_op_backends.py). Per op, the first group shares one set of
# attributes and the channel sizes, so one dynamic-shape ONNX graph (exported from the first case,
# batch 2) runs all of it; the rest adds what only some backends take: other attributes (the released
# NLSN block, u = 3) and fp16. Small enough for the CPU backends in seconds.
_TABLE_ATTENTION = [  # chunk 16, 2 rounds, c = 4, C = 8: 1, 2 and 3 chunks, with and without padding
    AttentionCase(2, 5, 8, 4, 8, 16, 2, "padding, batch 2"),
    AttentionCase(1, 4, 4, 4, 8, 16, 2, "1 chunk"),
    AttentionCase(1, 4, 7, 4, 8, 16, 2, "2 chunks, padding"),
    AttentionCase(1, 6, 8, 4, 8, 16, 2, "3 chunks"),
    AttentionCase(3, 1, 37, 4, 8, 16, 2, "padding, batch 3"),
]


def table_cases(op: str) -> list[OpCase]:
    """The cases of ``op`` in the op × backend table: fp32, then the same in fp16 (float ops); the
    first fp32 group shares one set of attributes."""
    if op == "BucketSort":  # the graph's num_buckets is a bound: codes from 1 to 64 buckets under it
        return [sort_case(2, 80, 4, seed=0, num_buckets=256), sort_case(1, 74, 4, seed=1, num_buckets=256),
                sort_case(3, 600, 36, seed=2, num_buckets=256), sort_case(3, 1000, 7, seed=3, num_buckets=256),
                sort_case(2, 4 * 48 * 48, 64, seed=4, num_buckets=256), sort_case(2, 2, 1, seed=5, num_buckets=256),
                sort_case(2, 4 * 48 * 48, 4 * 16, seed=6)]
    if op == "BucketAttention":
        def group(dtype):
            return ([attention_case(c, seed=i, dtype=dtype, peaky=p)
                     for p in (False, True) for i, c in enumerate(_TABLE_ATTENTION)]
                    + [attention_case(c, seed=10 + i, dtype=dtype, peaky=p)  # the released block: 1, 2, 3 chunks
                       for p in (False, True) for i, c in enumerate(ATTENTION_CASES[:3])])
    elif op == "CrossScaleFold":
        def group(dtype):  # 5 channels, u = 2 (kernel 6x6), odd sizes; then u = 3
            return ([fold_case(N, H, W, 5, 2, seed=i, dtype=dtype)
                     for i, (N, H, W) in enumerate([(2, 10, 14), (1, 6, 8), (3, 4, 6), (1, 7, 5)])]
                    + [fold_case(1, 9, 6, 5, 3, seed=4, dtype=dtype), fold_case(2, 6, 6, 7, 3, seed=5, dtype=dtype)])
    else:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    return group(torch.float32) + group(torch.float16)
