"""The op-level groups of the kernel benchmarks (benchmarks/kernels.py): the BucketAttention path of one
released NLSN block (``nlsa``) and CrossScaleFold (``fold``), each kernel against the project's
PyTorch reference and the official code's formulation (written here, vectorised as the paper's code
is), and the BucketAttention variants of the kernels library ($SRDEPLOY_BUCKET_ATTENTION)."""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from benchmarks import op_cases
from benchmarks.kernel_timing import Recorder, measure, try_path
from models import ops
from plugins import kernels as binding

__all__ = ["VARIANT_ENV", "VARIANTS", "DTYPES", "FLOORS", "FOLD_CH", "FOLD_U", "official_bucket_sort",
           "official_attention", "official_nlsa", "reference_nlsa", "official_fold", "attention_variant",
           "variants_of", "bench_nlsa", "bench_fold"]

VARIANT_ENV = "SRDEPLOY_BUCKET_ATTENTION"
SRD_ERR_INVALID_ATTRIBUTE = 3  # what the C ABI answers to an unknown variant name
VARIANTS = ("gather", "chunk")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
FLOORS = {name: op_cases.FLOORS_DB[dtype] for name, dtype in DTYPES.items()}  # DESIGN §5
FOLD_CH, FOLD_U = 128, 2


# ------------------------------------------------------------------------- official-style formulations

def official_bucket_sort(codes: torch.Tensor):
    """The official code's sort: argsort of the round-offset codes, a second argsort for the inverse
    (stable here, so its output is comparable with the deterministic paths)."""
    order = codes.argsort(dim=-1, stable=True)
    return order, order.argsort(dim=-1)


def official_attention(q, v, order, undo, cs, R, eps):
    """NLSA as the paper's code computes it: every round in one batch ([N, R, nc, cs, 3cs] scores),
    adjacent chunks by roll, per-round logsumexp, softmax over rounds."""
    N, L, c = q.shape
    C = v.shape[-1]
    src = order % L
    qs = q.gather(1, src[..., None].expand(-1, -1, c)).view(N, R, L, c)
    vs = v.gather(1, src[..., None].expand(-1, -1, C)).view(N, R, L, C)
    pad = (cs - L % cs) % cs
    if pad:
        qs, vs = torch.cat([qs, qs[:, :, -pad:]], dim=2), torch.cat([vs, vs[:, :, -pad:]], dim=2)
    qs, vs = qs.reshape(N, R, -1, cs, c), vs.reshape(N, R, -1, cs, C)
    keys = F.normalize(qs, p=2, dim=-1, eps=eps)
    keys = torch.cat([keys, keys.roll(1, 2), keys.roll(-1, 2)], dim=3)
    vals = torch.cat([vs, vs.roll(1, 2), vs.roll(-1, 2)], dim=3)
    raw = torch.einsum("nrkie,nrkje->nrkij", qs, keys)
    lse = torch.logsumexp(raw, dim=-1, keepdim=True)
    ret = torch.einsum("nrkij,nrkje->nrkie", torch.exp(raw - lse), vals)
    ret = ret.reshape(N, R, -1, C)[:, :, :L].reshape(N, -1, C)
    lse = lse.reshape(N, R, -1)[:, :, :L].reshape(N, -1)
    ret = ret.gather(1, undo[..., None].expand(-1, -1, C)).view(N, R, L, C)
    lse = lse.gather(1, undo).view(N, R, L, 1)
    return (ret * torch.softmax(lse, dim=1)).sum(dim=1)


def official_nlsa(q, v, codes, cs, R, eps):
    return official_attention(q, v, *official_bucket_sort(codes.long()), cs, R, eps)


def reference_nlsa(q, v, codes, num_buckets, cs, R, eps):
    return ops.bucket_attention_reference(q, v, *ops.bucket_sort_reference(codes, num_buckets), cs, R, eps)


def official_fold(scores, patches, stride, padding):
    return torch.cat([F.conv_transpose2d(scores[i:i + 1], patches[i], stride=stride, padding=padding)
                      for i in range(scores.shape[0])])


# ------------------------------------------------------------------------------------- variants

@contextlib.contextmanager
def attention_variant(name: str | None):
    """$SRDEPLOY_BUCKET_ATTENTION set to ``name`` (None: unset) within the block."""
    saved = os.environ.get(VARIANT_ENV)
    if name is None:
        os.environ.pop(VARIANT_ENV, None)
    else:
        os.environ[VARIANT_ENV] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(VARIANT_ENV, None)
        else:
            os.environ[VARIANT_ENV] = saved


def variants_of(kernels: binding.Kernels) -> list[str]:
    """The BucketAttention variants this library offers, asked without a GPU: given an unknown
    $SRDEPLOY_BUCKET_ATTENTION and no workspace, a library that reads the variable refuses the name
    (SRD_ERR_INVALID_ATTRIBUTE) before anything else; one that predates the variants (gather only)
    asks for workspace instead. Nothing is launched either way."""
    fake = 0x1000  # non-NULL pointers the C ABI never dereferences before refusing the call
    with attention_variant("no-such-variant"):
        status = kernels.lib.srd_bucket_attention(fake, fake, fake, fake, fake, 1, 144, 8, 8, 144, 1, 5e-5, 0,
                                                  None, 0, None)
    return list(VARIANTS) if status == SRD_ERR_INVALID_ATTRIBUTE else ["gather"]


# ----------------------------------------------------------------------------------------- groups

def bench_nlsa(rec: Recorder, kernels, variants, sizes, dtypes, reps, warmup, device) -> None:
    p = op_cases.RELEASED_NLSA
    cs, R, eps = p["cs"], p["R"], op_cases.KEY_EPS
    for size in sizes:
        for dname in dtypes:
            q, v, codes, nb = op_cases.attention_inputs(1, size, size, p["c"], p["C"], cs, R, seed=size,
                                                        dtype=DTYPES[dname], device=device, peaky=True)
            tag, L = f"nlsa 1x{p['C']}x{size}x{size} {dname}", size * size
            ref = f"{tag} reference"
            note: list[str] = []
            m = try_path(lambda: measure(lambda: reference_nlsa(q, v, codes, nb, cs, R, eps), reps, warmup), note)
            rec.measured("nlsa", ref, m, L, "; ".join(note))
            # the oracle: the reference in fp32 on the same (for fp16: upcast) inputs
            want = m["out"] if m and dname == "fp32" else reference_nlsa(q.float(), v.float(), codes, nb, cs, R, eps)
            note = []
            m = try_path(lambda: measure(lambda: official_nlsa(q, v, codes, cs, R, eps), reps, warmup), note)
            rec.measured("nlsa", f"{tag} official", m, L, "; ".join(note))
            if m is not None and dname == "fp32":  # the official-style formulation computes the same
                rec.check(f"{tag} official-style vs reference", m["out"], want, FLOORS[dname])
            for variant in variants if kernels is not None else []:
                name, note = f"{tag} kernel-{variant}", []
                with attention_variant(variant):
                    m = try_path(lambda: measure(lambda: kernels.bucket_attention(
                        q, v, *kernels.bucket_sort(codes, nb), cs, R, eps), reps, warmup), note)
                rec.measured("nlsa", name, m, L, "; ".join(note))
                if m is not None:
                    rec.check(name, m["out"].float(), want, FLOORS[dname])
                rec.versus(name, f"{tag} official")
                rec.versus(name, ref)
            rec.versus(f"{tag} reference", f"{tag} official")
            del q, v, codes, want, m
            if device == "cuda":
                torch.cuda.empty_cache()


def bench_fold(rec: Recorder, kernels, sizes, dtypes, reps, warmup, device) -> None:
    for size in sizes:
        for dname in dtypes:
            s, p = op_cases.fold_inputs(1, size, size, FOLD_CH, FOLD_U, seed=size, dtype=DTYPES[dname], device=device)
            tag, px = f"fold 1x{FOLD_CH}x{size}x{size} u{FOLD_U} {dname}", (FOLD_U * size) ** 2
            paths = {"reference": lambda: ops.cross_scale_fold_reference(s, p, FOLD_U, FOLD_U),
                     "official": lambda: official_fold(s, p, FOLD_U, FOLD_U)}
            if kernels is not None:
                paths["kernel"] = lambda: kernels.cross_scale_fold(s, p, FOLD_U, FOLD_U)
            want = ops.cross_scale_fold_reference(s.float(), p.float(), FOLD_U, FOLD_U)  # fp32 oracle
            for path, fn in paths.items():
                note: list[str] = []
                m = try_path(lambda: measure(fn, reps, warmup), note)
                rec.measured("fold", f"{tag} {path}", m, px, "; ".join(note))
                if m is not None and (path == "kernel" or (path == "official" and dname == "fp32")):
                    rec.check(f"{tag} {path}" + (" vs reference" if path == "official" else ""), m["out"].float(),
                              want, FLOORS[dname])
            rec.versus(f"{tag} kernel", f"{tag} reference")
            rec.versus(f"{tag} kernel", f"{tag} official")
