"""The IPluginV3 enqueue harness: the srdeploy TensorRT plugins run as TensorRT runs them, on a GPU,
against references from ``models.ops``.

    python -m plugins.trt.harness [--build-dir D] [--arch 90-real] [--variants gather,chunk] [--json F]

builds the plugin library and ``srdeploy_trt_enqueue_harness`` (``enqueueHarness.cpp``, which says
what it calls and checks), writes the cases below (inputs and float64 references as raw
little-endian files + ``manifest.txt``) and runs the harness on them. Needs torch and numpy only.

Cases (DESIGN.md section 5 floors: fp32 >= 100 dB, fp16 >= 60 dB, BucketSort exact): BucketSort
with released NLSN sizes and odd ones; BucketAttention in fp32 and fp16 with the released block
shape (c=64, C=256, chunk 144, 4 hashes), 1, 2 (with padding) and 3 chunks, odd sizes, C > 256 and
peaky queries (x20, as conv outputs are; fp32); CrossScaleFold x2 and x3 in fp32 and fp16. Every
input's profile maximum is larger than the input, so workspace comes from the profile maxima and
the shapes from onShapeChange, as in a dynamic-shape engine.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import torch

from models import ops
from models.files import atomic_write

__all__ = ["Case", "EXIT_NO_GPU", "FLOORS", "cases", "run", "write_cases"]

#: DESIGN.md section 5: PSNR floors (dB, peak 1) of a kernel against its reference
FLOORS = {torch.float32: 100.0, torch.float16: 60.0}
#: the harness's exit status when no CUDA device is present (nothing run)
EXIT_NO_GPU = 3
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.int32: "int32"}
_EPS = 5e-5


@dataclasses.dataclass
class Case:
    """One plugin call: inputs (with the profile's largest shape of each), attributes, references."""
    name: str
    op: str
    attributes: dict[str, int | float]
    inputs: dict[str, torch.Tensor]
    max_shapes: dict[str, tuple[int, ...]]
    references: dict[str, torch.Tensor]  # float64 for float outputs, int32 for index outputs
    output_dtypes: dict[str, torch.dtype]
    floor_db: float


# ------------------------------------------------------------------------------------ inputs

def bucket_sort_case(name: str, batch: int, length: int, buckets: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, buckets, (batch, length), dtype=torch.int32, generator=g)
    order, rank = ops.bucket_sort_reference(codes, buckets)
    return Case(name, "BucketSort", {"num_buckets": buckets}, {"codes": codes}, {"codes": (batch, 2 * length)},
                {"order": order, "rank": rank}, {"order": torch.int32, "rank": torch.int32}, 0.0)


def bucket_attention_case(name: str, n: int, h: int, w: int, c: int, channels: int, chunk: int, rounds: int,
                          dtype: torch.dtype, seed: int, query_scale: float = 0.5) -> Case:
    """Features like conv outputs (queries N(0, query_scale), values in [0, 1)), codes from real LSH
    hashing (DESIGN.md section 2: hb buckets per round, round offsets)."""
    g = torch.Generator().manual_seed(seed)
    length = h * w
    q = query_scale * torch.randn(n, length, c, generator=g)
    v = torch.rand(n, length, channels, generator=g)
    hb = min(length // chunk + (length // chunk) % 2, 128)
    rotations = torch.randn(c, rounds, hb // 2, generator=g)
    projected = torch.einsum("ntf,fri->nrti", q, rotations)
    codes = torch.cat([projected, -projected], dim=-1).argmax(dim=-1)
    codes = (codes + torch.arange(rounds).view(1, -1, 1) * hb).reshape(n, -1).to(torch.int32)
    order, rank = ops.bucket_sort_reference(codes, rounds * hb)
    q, v = q.to(dtype), v.to(dtype)
    # The oracle in float64 from the very values the plugin sees.
    out = ops.bucket_attention_reference(q.double(), v.double(), order, rank, chunk, rounds, _EPS)
    biggest = 2 * length
    return Case(name, "BucketAttention", {"chunk_size": chunk, "n_hashes": rounds, "eps": _EPS},
                {"q": q, "v": v, "order": order, "rank": rank},
                {"q": (n, biggest, c), "v": (n, biggest, channels), "order": (n, rounds * biggest),
                 "rank": (n, rounds * biggest)},
                {"out": out}, {"out": dtype}, FLOORS[dtype])


def cross_scale_fold_case(name: str, n: int, h: int, w: int, channels: int, factor: int, dtype: torch.dtype,
                          seed: int) -> Case:
    """CSNLN sizes: K = (H/u)(W/u) patches of (3u)^2, scores a softmax over K, patches of feature
    scale (sigma 0.25) so that PSNR at peak 1 measures arithmetic, not output range."""
    g = torch.Generator().manual_seed(seed)
    k = (h // factor) * (w // factor)
    scores = torch.softmax(10 * torch.randn(n, k, h, w, generator=g), dim=1).to(dtype)
    patches = (0.25 * torch.randn(n, k, channels, 3 * factor, 3 * factor, generator=g)).to(dtype)
    out = ops.cross_scale_fold_reference(scores.double(), patches.double(), factor, factor)
    hm, wm = h + 2 * factor, w + 2 * factor
    km = (hm // factor) * (wm // factor)
    return Case(name, "CrossScaleFold", {"stride": factor, "padding": factor}, {"scores": scores, "patches": patches},
                {"scores": (n, km, hm, wm), "patches": (n, km, channels, 3 * factor, 3 * factor)},
                {"out": out}, {"out": dtype}, FLOORS[dtype])


def cases(small: bool = False) -> list[Case]:
    """The harness's cases; small: one per op (for a quick look, e.g. the CPU test)."""
    if small:
        return [bucket_sort_case("sort_small", 2, 300, 7, seed=1),
                bucket_attention_case("attention_small_fp32", 1, 10, 10, 8, 16, 16, 2, torch.float32, seed=2),
                cross_scale_fold_case("fold_small_fp32", 1, 6, 8, 4, 2, torch.float32, seed=3),
                cross_scale_fold_case("fold_small_fp16", 1, 6, 6, 3, 3, torch.float16, seed=4)]
    out = [bucket_sort_case("sort_nlsn_48x48_r4", 1, 4 * 48 * 48, 4 * 16, seed=10),
           bucket_sort_case("sort_nlsn_96x96_r4", 2, 4 * 96 * 96, 4 * 64, seed=11),
           bucket_sort_case("sort_odd", 3, 1000, 7, seed=12)]
    for dtype, tag in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        out += [
            bucket_attention_case(f"attention_nlsn_48x48_{tag}", 1, 48, 48, 64, 256, 144, 4, dtype, seed=20),
            bucket_attention_case(f"attention_1chunk_{tag}", 1, 12, 12, 64, 256, 144, 4, dtype, seed=21),
            bucket_attention_case(f"attention_2chunks_pad_{tag}", 1, 16, 17, 64, 256, 144, 2, dtype, seed=22),
            bucket_attention_case(f"attention_3chunks_{tag}", 2, 24, 18, 64, 256, 144, 4, dtype, seed=23),
            bucket_attention_case(f"attention_odd_pad_{tag}", 2, 19, 23, 20, 70, 50, 3, dtype, seed=24),
            bucket_attention_case(f"attention_wide_C300_{tag}", 1, 40, 40, 16, 300, 144, 1, dtype, seed=25),
            cross_scale_fold_case(f"fold_x2_{tag}", 1, 24, 24, 64, 2, dtype, seed=30),
            cross_scale_fold_case(f"fold_x3_{tag}", 2, 18, 18, 32, 3, dtype, seed=31),
            cross_scale_fold_case(f"fold_odd_{tag}", 2, 10, 14, 5, 2, dtype, seed=32),
        ]
    # Peaky queries: softmax and round weights near one-hot (fp32: fp16 rounding of |q| ~ 80 is its own error).
    out.append(bucket_attention_case("attention_peaky_x20_fp32", 1, 40, 40, 64, 256, 144, 4, torch.float32,
                                     seed=26, query_scale=10.0))
    return out


# --------------------------------------------------------------------------------- files

def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def write_cases(directory: str | Path, selected: list[Case]) -> Path:
    """Inputs as the plugin's dtype, references as float64 (int32 for index outputs), raw
    little-endian; the manifest last (atomically), so a half-written folder has none."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["# srdeploy plugin enqueue cases (python -m plugins.trt.harness); format: enqueueHarness.cpp"]
    for case in selected:
        lines += [f"case {case.name}", f"op {case.op}"]
        for key, value in case.attributes.items():
            lines.append(f"attr {key} {'float' if isinstance(value, float) else 'int'} {value!r}")
        for key, t in case.inputs.items():
            file = f"{case.name}.{key}.bin"
            array = t.contiguous().numpy()
            array.astype(array.dtype.newbyteorder("<"), copy=False).tofile(directory / file)
            lines.append(f"input {key} {_DTYPE_NAMES[t.dtype]} {_dims(t.shape)} {_dims(case.max_shapes[key])} {file}")
        for key, ref in case.references.items():
            file = f"{case.name}.{key}.ref"
            array = ref.numpy().astype("<i4" if ref.dtype == torch.int32 else "<f8")
            array.tofile(directory / file)
            lines.append(f"output {key} {_DTYPE_NAMES[case.output_dtypes[key]]} {_dims(ref.shape)} {file}")
        lines += [f"floor {case.floor_db}", "end"]
    manifest = directory / "manifest.txt"
    atomic_write(manifest, "\n".join(lines) + "\n")
    return manifest


def run(harness: str | Path, library: str | Path, cases_dir: str | Path, *, json_path: str | Path | None = None,
        variants: str = "gather,chunk", timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs the harness; returns the finished process and its results (None without json_path or
    when it wrote none, e.g. without a GPU)."""
    cmd = [str(harness), "--library", str(library), "--cases", str(cases_dir), "--variants", variants]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    results = None
    if json_path is not None and Path(json_path).is_file() and proc.returncode in (0, 1):
        results = json.loads(Path(json_path).read_text())
    return proc, results
