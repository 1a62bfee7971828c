"""What benchmarks.parity and benchmarks.latency share: model configurations, inputs, exports,
metrics, and writing results (JSON + a Markdown table), all reproducible from the command line."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

import models
from models.base import SRModel
from models.errors import SrdeployError, UsageError
from models.files import atomic_write

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRDEPLOY_SHARED", REPO.parent / "shared"))
# Small configurations: every model × scale × mode in minutes on one CPU core.
SMALL = {
    "nlsn": dict(n_resblocks=2, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1),
    "csnln": dict(n_feats=16, depth=2, rgb_range=1),
    "edsr": dict(n_resblocks=2, n_feats=16, rgb_range=1),
}
MODELS = tuple(SMALL)
MODES = ("onnx", "plugin")
# Real images for inputs: LR crops of these HR images (cycled through sizes).
IMAGES = ("butterfly.png", "bird.png", "head.png", "woman.png", "baby.png")


def csv(kind):
    """argparse type: comma-separated list of ``kind``."""
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v]
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HxW, e.g. 24x32, got {text!r}") from None
    return h, w


def option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class UsageExit(SystemExit):
    """A bad argument or output found before any work: its one line is on stderr, exit status 2."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(message: str, prog: str | None = None) -> UsageExit:
    """Print ``prog: error: message`` (one line) and return the exception to raise."""
    print(f"{prog or 'error'}{': error' if prog else ''}: {message}", file=sys.stderr)
    return UsageExit(message)


@contextlib.contextmanager
def one_line_errors(prog: str | None = None):
    """Within the block, an srdeploy error (weights that do not load, a repository that cannot be
    written, ...) ends the command as :func:`fail` does: its one line on stderr, exit status 2."""
    try:
        yield
    except SrdeployError as e:
        raise fail(str(e), prog) from None


def add_model_arguments(p: argparse.ArgumentParser, default_sizes: str) -> None:
    p.add_argument("--models", type=csv(str), default=list(MODELS), metavar="{nlsn,csnln,edsr}[,...]",
                   help="comma-separated architectures")
    p.add_argument("--scales", type=csv(int), default=[2, 3, 4], metavar="{2,3,4}[,...]",
                   help="comma-separated scales")
    p.add_argument("--modes", type=csv(str), default=list(MODES), metavar="{onnx,plugin}[,...]",
                   help="export modes: standard ops only (onnx) or srdeploy custom nodes (plugin)")
    p.add_argument("--sizes", type=csv(size), default=csv(size)(default_sizes), metavar="HxW[,...]",
                   help=f"LR input sizes (default: {default_sizes}); each is raised to the model's valid size")
    p.add_argument("--weights", metavar="PATTERN",
                   help="checkpoints, e.g. 'weights/{model}_x{scale}.pt' (default: the bundled compact weights "
                        "of each model and scale (NLSN, CSNLN x2/x3/x4), random weights of --config where none "
                        "are bundled (EDSR))")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights (seed 0) of --config for every model, even where weights are bundled")
    p.add_argument("--config", dest="model_config", choices=["small", "released"], default="small",
                   help="random weights only: small (tiny widths/depths, CPU minutes) or released (the papers' "
                        "configurations)")
    p.add_argument("--set", dest="options", action="append", type=option, default=[], metavar="KEY=VALUE",
                   help="model option (official name) applied to every model that has it")
    p.add_argument("--out-dir", type=Path, default=Path("results"), metavar="DIR",
                   help="where JSON, table and plot go (created if missing)")
    p.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="where exported ONNX files go and are reused (default: a temporary folder, removed at "
                        "the end)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")


@dataclasses.dataclass
class Sweep:
    """What benchmarks.parity and benchmarks.latency run over (the flags of :func:`add_model_arguments`)."""
    models: Sequence[str] = MODELS
    scales: Sequence[int] = (2, 3, 4)
    modes: Sequence[str] = MODES
    sizes: Sequence[tuple[int, int]] = ((32, 32),)     # LR sizes, each raised to the model's valid size
    weights: str | None = None                          # checkpoints: a {model}/{scale} pattern (None: bundled)
    random_weights: bool = False                        # random weights (seed 0) even where weights are bundled
    model_config: str = "small"                         # random weights: "small" or "released" configurations
    options: Sequence[tuple[str, Any]] = ()             # model options (official names) for every model
    work_dir: Path | None = None                        # exports kept here (None: a temporary folder)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **more):
        """The configuration the command line asks for (``more``: fields that are not flags)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names}, **more)

    def check(self) -> None:
        """Unknown names are a UsageError naming the flag, before any work."""
        check_choices(("--modes", self.modes, MODES), ("--models", self.models, MODELS))


def check_choices(*checks: tuple[str, Sequence[str], Sequence[str]]) -> None:
    """Each (flag, values, allowed): a UsageError naming the flag for a value not allowed."""
    for flag, values, allowed in checks:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise UsageError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")


def weights_for(name: str, scale: int, pattern: str | None, random_weights: bool = False) -> str | None:
    """The checkpoint for (model, scale): the --weights pattern, else the bundled one, else None
    (random weights); None as well with --random-weights."""
    if pattern:
        return pattern.format(model=name, scale=scale)
    if random_weights:
        return None
    from models import weights as bundled
    entry = bundled.find(name, scale)
    return str(entry.path) if entry is not None and entry.model == name and entry.scale == scale else None


def build_model(name: str, scale: int, config: str, options: Sequence[tuple[str, Any]] = (),
                weights: str | None = None) -> SRModel:
    """The network to measure: ``weights`` (a path or a {model}/{scale} pattern; bundled weights get
    the options their manifest lists), else random weights (seed 0) of ``config``."""
    defaults = models.ARCHITECTURES[name].defaults
    opts = {k: v for k, v in options if k in defaults}
    if weights:
        from models import weights as bundled
        path = weights.format(model=name, scale=scale)
        entry = next((e for e in bundled.entries() if str(e.path) == path), None)
        opts = {**(entry.overrides if entry else {}), **opts}
        return models.load(path, model=name, scale=scale, **opts).eval()
    torch.manual_seed(0)
    base = SMALL[name] if config == "small" else {}
    return models.build(name, scale, **{**base, **opts}).eval()


def real_lr(h: int, w: int, scale: int, index: int = 0) -> tuple[torch.Tensor, str]:
    """[1, 3, h, w] in [0, 1]: an LR crop (MATLAB bicubic from a Set5 HR image), or noise with a
    note when the images are not there."""
    from PIL import Image

    from runtime.resize import bicubic_downscale_uint8
    folder = SHARED / "data" / "benchmark" / "Set5" / "HR"
    for k in range(len(IMAGES)):
        name = IMAGES[(index + k) % len(IMAGES)]
        if not (folder / name).is_file():
            continue
        hr = np.asarray(Image.open(folder / name).convert("RGB"))
        lr = bicubic_downscale_uint8(hr, scale)
        if lr.shape[0] >= h and lr.shape[1] >= w:
            top, left = (lr.shape[0] - h) // 2, (lr.shape[1] - w) // 2
            crop = lr[top:top + h, left:left + w].astype(np.float32) / 255
            return torch.from_numpy(crop).permute(2, 0, 1)[None].contiguous(), f"Set5/{name}"
    g = torch.Generator().manual_seed(h * 1000 + w)
    return torch.rand(1, 3, h, w, generator=g), "uniform noise (Set5 not found)"


def lsh_min_margin(model: SRModel, x: torch.Tensor) -> float | None:
    """Smallest relative gap between the best and second-best LSH bucket over every NLSN attention
    block and position for input ``x`` (None for networks without LSH). A gap near fp32 rounding
    (~1e-7) means another backend's kernels can flip that position's bucket, which moves chunk
    boundaries of the sorted sequence: a discontinuity of the network, not an export error."""
    from models.nlsn import NonLocalSparseAttention, num_buckets
    blocks = [m for m in model.modules() if isinstance(m, NonLocalSparseAttention)]
    if not blocks:
        return None
    margins, hooks = [], []

    def measure(block):
        def hook(_module, _inputs, out):
            q = out.flatten(2).transpose(1, 2).double()
            buckets = num_buckets(q.shape[1], block.chunk_size)
            p = torch.einsum("ntf,fri->nrti", q, block.rotations[:, :, : buckets // 2].double())
            top2 = torch.cat([p, -p], dim=-1).topk(2, dim=-1).values
            margins.append(float(((top2[..., 0] - top2[..., 1]) / top2[..., 0].abs().clamp_min(1e-30)).min()))
        return hook

    for block in blocks:
        hooks.append(block.conv_match.register_forward_hook(measure(block)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return min(margins)


def export_dynamic(model: SRModel, mode: str, precision: str, work_dir: Path,
                   weights: str | None = None) -> tuple[Path, dict[str, Any]]:
    """One dynamic ONNX file for (model, mode, precision) under work_dir; a file already there is
    reused only when its metadata says it holds this very configuration and weights."""
    from export.onnx import export_model
    from runtime.backends import onnx_metadata
    path = work_dir / f"{model.name}_x{model.scale}_{mode}_{precision}.onnx"
    weights = weights.format(model=model.name, scale=model.scale) if weights else None
    info: dict[str, Any] = {"file": str(path), "weights": weights or "random (seed 0)"}
    wanted = {"config": json.loads(json.dumps(model.config)), "weights": weights or "random (seed 0)",
              "fixed_size": None, "ops": mode, "precision": precision}
    reuse = False
    if path.exists():
        try:
            meta = onnx_metadata(path)
            reuse = all(meta.get(k) == v for k, v in wanted.items())
        except SrdeployError:  # not ONNX, or no metadata: export again over it
            reuse = False
    if not reuse:
        result = export_model(model, path, mode=mode, precision=precision, check=False, overwrite=True,
                              weights=weights)
        info["export_s"] = round(result.seconds, 2)
    info["file_kib"] = round(path.stat().st_size / 1024, 1)
    return path, info


def environment() -> dict[str, Any]:
    import onnxruntime
    info = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "providers": onnxruntime.get_available_providers(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import onnxruntime_extensions
        info["onnxruntime_extensions"] = onnxruntime_extensions.__version__
    except ImportError:
        info["onnxruntime_extensions"] = None
    try:
        import tensorrt
        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Markdown table; columns: (key, header)."""
    def fmt(v):
        if isinstance(v, float):
            if math.isinf(v):
                return "inf"
            return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return "" if v is None else str(v)
    rows = list(rows)
    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line([h for _, h in columns]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(c) for c in cells])


def check_outputs(paths: Sequence[Path], overwrite: bool, work_dir: Path | None = None, prog: str | None = None,
                  instead: str = "another --out-dir") -> None:
    """Before any work: every result file's folder can be created and written, none of them is a
    folder, none exists (unless ``overwrite``), and ``work_dir`` is usable; else :class:`UsageExit`."""
    from models.files import file_problem, folder_problem
    for folder in [work_dir] if work_dir is not None else []:
        problem = folder_problem(folder)
        if problem:
            raise fail(f"--work-dir: {problem}", prog)
    for path in paths:
        problem = file_problem(path)
        if problem:
            raise fail(f"cannot write {path}: {problem}", prog)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise fail(f"{', '.join(existing)} exist(s); pass --overwrite or {instead}", prog)


@contextlib.contextmanager
def work_dir(folder: Path | None, prefix: str):
    """``folder`` (created if missing, kept), or a temporary folder removed at the end, interrupted or not."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def prepare_sweep(config: Sweep, outputs: Sequence[Path], overwrite: bool, prog: str) -> int | None:
    """Everything a sweep checks before any work: its config (one line, and 2 to return from ``main``) and
    its result files (:func:`check_outputs`); then quiets the exporter's own chatter. None when all is well."""
    try:
        config.check()
    except SrdeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from export.onnx import quiet_torch_exporter
    quiet_torch_exporter()
    check_outputs(outputs, overwrite, config.work_dir, prog)
    return None


def run_sweep(run, config: Sweep, prog: str, name: str):
    """``run(config, work)`` with ``work`` = ``config.work_dir``, else a temporary folder removed at the end;
    an SrdeployError (bad weights, an export refused) is the one-line :class:`UsageExit`, nothing written."""
    try:
        with work_dir(config.work_dir, f"srdeploy-{name}-") as work:
            return run(config, work)
    except SrdeployError as e:
        raise fail(str(e), prog) from None


def _plain(obj: Any) -> Any:
    """JSON-safe: inf/nan become the strings "inf"/"nan" (strict JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any, *, overwrite: bool = True) -> None:
    """``obj`` as strict JSON (inf/nan as strings), written atomically; ``overwrite=False`` refuses
    (OutputExistsError) a file that exists, also one that appeared while the results were computed."""
    atomic_write(path, json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n", overwrite=overwrite)
