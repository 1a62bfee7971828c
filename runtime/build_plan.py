"""The plan of a TensorRT engine build: everything :mod:`runtime.build` checks before TensorRT is touched.

    from runtime.build import make_plan, build
    plan = make_plan("nlsn_x2.onnx", "nlsn_x2.engine", min_shapes={"input": (1, 3, 48, 48)},
                     opt_shapes="input:1x3x128x128", max_shapes="input:1x3x256x256")
    result = build(plan)

:func:`make_plan` reads the ONNX file (inputs, srdeploy metadata, custom nodes) and checks the request
against it: shapes (trtexec strings or ``{name: dims}``), min <= opt <= max, the model's size rules,
the target's limits, the plugin library, the engine path (never replaced without ``force``). It
writes nothing and needs no TensorRT. Its messages name the CLI flags, which map one to one onto its
keywords (``opt_shapes`` is ``--optShapes``). :meth:`BuildPlan.command` is the inverse: the
``python -m runtime.build`` command line that makes the same plan (the sidecar's rebuild command).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from models.errors import UsageError

from . import trt as rtrt

__all__ = ["PROG", "MEMORY_POOLS", "BuildPlan", "OnnxInfo", "make_plan", "read_onnx", "make_profile",
           "parse_shapes", "parse_mem_pool", "format_shape"]

PROG = "python -m runtime.build"

#: trtexec --memPoolSize names -> tensorrt.MemoryPoolType attribute names
MEMORY_POOLS = {
    "workspace": "WORKSPACE",
    "dlaSRAM": "DLA_MANAGED_SRAM",
    "dlaLocalDRAM": "DLA_LOCAL_DRAM",
    "dlaGlobalDRAM": "DLA_GLOBAL_DRAM",
    "tacticSharedMem": "TACTIC_SHARED_MEMORY",
}
_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

Shapes = dict[str, tuple[int, ...]]


# ------------------------------------------------------------------------------- parsing

def parse_shapes(text: str, flag: str = "--optShapes") -> Shapes:
    """trtexec shape syntax: ``name:1x3x64x64[,name2:...]``; a name may be quoted ('a:b':1x2)."""
    shapes: Shapes = {}
    for part in _split_outside_quotes(text, ","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise UsageError(f"{flag} {text!r}: expected name:DxDx..., e.g. input:1x3x64x64")
        name, dims = part.rsplit(":", 1)
        name = name.strip().strip("'\"")
        if not name:
            raise UsageError(f"{flag} {text!r}: an input name is empty")
        if not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
            raise UsageError(f"{flag} {part!r}: dimensions must be positive whole numbers joined by 'x' (1x3x64x64)")
        values = tuple(int(d) for d in dims.strip().split("x"))
        if any(v <= 0 for v in values):
            raise UsageError(f"{flag} {part!r}: every dimension must be > 0")
        if name in shapes:
            raise UsageError(f"{flag}: input {name!r} given twice")
        shapes[name] = values
    if not shapes:
        raise UsageError(f"{flag}: no shapes given")
    return shapes


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, cur, quote = [], [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _shapes(value: str | Mapping[str, Sequence[int]] | None, flag: str) -> Shapes | None:
    """A shape argument of :func:`make_plan`: trtexec text or ``{name: dims}``; None when not given."""
    if not value:
        return None
    if isinstance(value, str):
        return parse_shapes(value, flag)
    shapes: Shapes = {}
    for name, dims in value.items():
        dims = tuple(dims)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
            raise UsageError(f"{flag} {name}: every dimension must be a whole number > 0, got {list(dims)}")
        shapes[str(name)] = dims
    return shapes


def parse_mem_pool(text: str) -> dict[str, int]:
    """trtexec ``--memPoolSize``: ``workspace:1024[B|K|M|G][,pool:size]``, MiB when no unit; -> bytes."""
    pools: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\w+):(\d+(?:\.\d+)?)([BKMG]?)", part)
        if not m:
            raise UsageError(f"--memPoolSize {part!r}: expected pool:size[B|K|M|G], e.g. workspace:1024M")
        pool, size, unit = m.groups()
        if pool not in MEMORY_POOLS:
            raise UsageError(f"--memPoolSize {part!r}: unknown pool {pool!r}; pools: {', '.join(MEMORY_POOLS)}")
        pools[pool] = int(float(size) * _UNITS[unit or "M"])
    if not pools:
        raise UsageError("--memPoolSize: nothing given")
    return pools


def _mem_pool(value: str | Mapping[str, int] | None) -> dict[str, int]:
    """The mem_pool argument of :func:`make_plan`: trtexec text or ``{pool: bytes}``."""
    if not value:
        return {}
    if isinstance(value, str):
        return parse_mem_pool(value)
    for pool, size in value.items():
        if pool not in MEMORY_POOLS:
            raise UsageError(f"--memPoolSize {pool}: unknown pool {pool!r}; pools: {', '.join(MEMORY_POOLS)}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UsageError(f"--memPoolSize {pool}: the size is a whole number of bytes >= 0, got {size!r}")
    return dict(value)


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


# ------------------------------------------------------------------------------- ONNX file

@dataclass
class OnnxInfo:
    path: Path
    sha256: str
    inputs: dict[str, list[int | str | None]]   # int: static, str/None: dynamic
    input_types: dict[str, int]                  # onnx.TensorProto element types
    custom_ops: list[str]                        # "srdeploy::BucketSort", ...
    meta: dict[str, Any]                         # srdeploy metadata (export/onnx.py), {} if none

    @property
    def precision(self) -> str:
        if self.meta.get("precision"):
            return str(self.meta["precision"])
        import onnx  # noqa: PLC0415
        return "fp16" if onnx.TensorProto.FLOAT16 in self.input_types.values() else "fp32"


def read_onnx(path: str | Path) -> OnnxInfo:
    # onnx and the op contract are loaded here, not at import: `--help` stays fast
    import onnx  # noqa: PLC0415

    from export import metadata  # noqa: PLC0415
    from models.ops.contract import ONNX_DOMAINS  # noqa: PLC0415
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--onnx {path}: no such file; export one with python -m export.onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 (protobuf raises several types)
        raise UsageError(f"--onnx {path}: not a readable ONNX file ({e})") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs, types = {}, {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        inputs[vi.name] = dims
        types[vi.name] = t.elem_type
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ONNX_DOMAINS})
    return OnnxInfo(path, rtrt.sha256_file(path), inputs, types, custom, metadata.read(model) or {})


# ---------------------------------------------------------------------------------- plan

@dataclass
class BuildPlan:
    """A checked build request (:func:`make_plan`); :func:`runtime.build.build` carries it out."""
    onnx: Path
    engine: Path
    profile: dict[str, dict[str, list[int]]]      # input -> {"min", "opt", "max"}
    precision: str
    onnx_sha256: str
    custom_ops: list[str] = field(default_factory=list)
    plugin_library: Path | None = None
    timing_cache: Path | None = None
    builder_optimization_level: int | None = None
    mem_pool: dict[str, int] = field(default_factory=dict)
    verbose: bool = False
    force: bool = False
    save_onnx: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)
    target: str = "trt"                               # runtime.trt.TARGETS
    tf32: bool = True                                 # trtexec's default; --noTF32 turns it off
    compute_capabilities: str | None = None           # --computeCapabilities as given (rtx)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    def command(self) -> str:
        """The runtime.build command line that makes this plan (the sidecar's rebuild command)."""
        parts = [PROG] + ["--target", self.target] * (self.target != "trt")
        parts += ["--onnx", str(self.onnx), "--saveEngine", str(self.engine)]
        if self.plugin_library:
            parts += ["--dynamicPlugins", str(self.plugin_library)]
        for which, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            if self.profile:
                parts += [flag, ",".join(f"{n}:{format_shape(p[which])}" for n, p in self.profile.items())]
        if self.timing_cache:
            parts += ["--timingCacheFile", str(self.timing_cache)]
        if self.builder_optimization_level is not None:
            parts += ["--builderOptimizationLevel", str(self.builder_optimization_level)]
        if self.mem_pool:
            parts += ["--memPoolSize", ",".join(f"{k}:{v}B" for k, v in self.mem_pool.items())]
        if not self.tf32:
            parts += ["--noTF32"]
        if self.compute_capabilities:
            parts += ["--computeCapabilities", self.compute_capabilities]
        return " ".join([parts[0]] + [shlex.quote(p) for p in parts[1:]])


def make_plan(onnx: str | Path, engine: str | Path, *,
              min_shapes: str | Mapping[str, Sequence[int]] | None = None,
              opt_shapes: str | Mapping[str, Sequence[int]] | None = None,
              max_shapes: str | Mapping[str, Sequence[int]] | None = None,
              target: str = "trt", plugin_library: str | Path | None = None,
              timing_cache: str | Path | None = None, builder_optimization_level: int | None = None,
              mem_pool: str | Mapping[str, int] | None = None, tf32: bool = True,
              compute_capabilities: str | Sequence[str] | None = None, save_onnx: str | Path | None = None,
              force: bool = False, verbose: bool = False) -> BuildPlan:
    """Check a build request against the ONNX file and return its plan; raises UsageError, writes nothing.

    Shapes are trtexec text (``"input:1x3x64x64"``) or ``{"input": (1, 3, 64, 64)}``; ``mem_pool`` is
    ``"workspace:1G"`` or ``{"workspace": bytes}``; ``plugin_library`` None finds the srdeploy library
    when the graph needs it (as runtime.trt does)."""
    if target not in rtrt.TARGETS:
        raise UsageError(f"target {target!r}: one of {', '.join(rtrt.TARGETS)}")
    if compute_capabilities is not None and not isinstance(compute_capabilities, str):
        compute_capabilities = ",".join(map(str, compute_capabilities))
    info = read_onnx(onnx)
    engine = Path(engine)
    if engine.is_dir():
        raise UsageError(f"--saveEngine {engine} is a folder; give a file name (e.g. {engine / 'model.engine'})")
    if engine.exists() and not force:
        raise UsageError(f"engine {engine} exists; pass --force to replace it")
    if engine.resolve() == info.path.resolve():
        raise UsageError("--saveEngine would overwrite the ONNX file")
    if save_onnx is not None:
        save_onnx = Path(save_onnx)
        for other, what in ((info.path, "ONNX file"), (engine, "engine")):
            if save_onnx.resolve() == other.resolve():
                raise UsageError(f"--saveOnnx {save_onnx} would overwrite the {what}; choose another file")
        if save_onnx.exists() and not force:
            raise UsageError(f"--saveOnnx {save_onnx} exists; pass --force to replace it or choose another file")
    if target == "rtx":
        _check_rtx_request(info, plugin_library, compute_capabilities, timing_cache)
    elif compute_capabilities:
        raise UsageError("--computeCapabilities goes with --target rtx (a --target trt engine runs on the GPU "
                         "it was built on)")
    profile = make_profile(info, _shapes(min_shapes, "--minShapes"), _shapes(opt_shapes, "--optShapes"),
                           _shapes(max_shapes, "--maxShapes"))
    plugin = _plugin_library(info, plugin_library)
    if builder_optimization_level is not None and not 0 <= builder_optimization_level <= 5:
        raise UsageError(f"--builderOptimizationLevel {builder_optimization_level}: must be 0..5")
    return BuildPlan(
        onnx=info.path, engine=engine, profile=profile, precision=info.precision, onnx_sha256=info.sha256,
        custom_ops=info.custom_ops, plugin_library=plugin, timing_cache=Path(timing_cache) if timing_cache else None,
        builder_optimization_level=builder_optimization_level, mem_pool=_mem_pool(mem_pool),
        verbose=verbose, force=force, save_onnx=save_onnx,
        model=info.meta, target=target, tf32=tf32, compute_capabilities=compute_capabilities)


def _plugin_library(info: OnnxInfo, given: str | Path | None) -> Path | None:
    """The plugin library to load: the one given (it must exist), else the srdeploy library when the
    graph holds srdeploy nodes, else none."""
    from models.ops.contract import DOMAIN  # noqa: PLC0415
    if given:
        plugin = Path(given)
        if not plugin.is_file():
            raise UsageError(f"--dynamicPlugins {plugin}: no such file")
        return plugin.resolve()
    if not info.custom_ops:
        return None
    foreign = [op for op in info.custom_ops if not op.startswith(f"{DOMAIN}::")]
    if foreign:
        raise UsageError(f"{info.path} holds custom ops srdeploy has no plugins for: {', '.join(foreign)}")
    try:
        return rtrt.find_plugin_library()
    except rtrt.PluginLibraryNotFound as e:
        raise UsageError(f"{info.path} holds {', '.join(info.custom_ops)}: {e}; or export with --ops onnx") from None


def _check_rtx_request(info: OnnxInfo, plugin_library, compute_capabilities: str | None, timing_cache) -> None:
    """--target rtx takes plain graphs only; refused here, before TensorRT-RTX's parser (which aborts the
    whole process on an srdeploy node) ever sees one."""
    if info.custom_ops:
        raise UsageError(f"--target rtx: {info.path} holds {', '.join(info.custom_ops)}, which TensorRT-RTX cannot "
                         f"build (no srdeploy plugins there); export with --ops onnx or use --target trt")
    if plugin_library:
        raise UsageError("--target rtx: --dynamicPlugins is not supported (TensorRT-RTX builds plain graphs only)")
    if compute_capabilities and not re.fullmatch(r"\d+\.\d+(,\d+\.\d+)*", compute_capabilities.replace(" ", "")):
        raise UsageError(f"--computeCapabilities {compute_capabilities!r}: expected major.minor[,major.minor], "
                         f"e.g. 8.6,8.9")
    if timing_cache:
        raise UsageError("--target rtx: --timingCacheFile is not supported (TensorRT-RTX tunes just in time on "
                         "the GPU that runs the engine)")


def make_profile(info: OnnxInfo, min_shapes: Shapes | None, opt_shapes: Shapes | None,
                 max_shapes: Shapes | None) -> dict[str, dict[str, list[int]]]:
    """One optimisation profile from parsed shapes, checked against the ONNX inputs.

    As in trtexec, ``--optShapes`` alone fixes min = opt = max; a missing ``--minShapes`` or
    ``--maxShapes`` takes the ``--optShapes`` value. Inputs with static shapes need no flags."""
    parsed = {"min": min_shapes, "opt": opt_shapes, "max": max_shapes}
    if (parsed["min"] or parsed["max"]) and not parsed["opt"]:
        raise UsageError("--minShapes/--maxShapes need --optShapes (the size TensorRT tunes for)")
    for which, shapes in parsed.items():
        for name in shapes or {}:
            if name not in info.inputs:
                raise UsageError(f"--{which}Shapes: {info.path} has no input {name!r}; inputs: "
                                 f"{', '.join(info.inputs) or '(none)'}")
    if parsed["opt"]:
        names = set(parsed["opt"])
        for which in ("min", "max"):
            if parsed[which] is not None and set(parsed[which]) != names:
                raise UsageError(f"--{which}Shapes and --optShapes must name the same inputs "
                                 f"({', '.join(sorted(parsed[which]))} vs {', '.join(sorted(names))})")
    profile: dict[str, dict[str, list[int]]] = {}
    for name, dims in info.inputs.items():
        dynamic = any(not isinstance(d, int) or d <= 0 for d in dims)
        if not parsed["opt"] or name not in parsed["opt"]:
            if dynamic:
                example = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims)
                raise UsageError(f"input {name!r} has dynamic shape [{', '.join(str(d) for d in dims)}]: give "
                                 f"--minShapes/--optShapes/--maxShapes {name}:{example} (e.g. "
                                 f"--minShapes {name}:1x3x64x64 --optShapes {name}:1x3x128x128 "
                                 f"--maxShapes {name}:1x3x256x256)")
            continue
        opt = parsed["opt"][name]
        lo = parsed["min"][name] if parsed["min"] else opt
        hi = parsed["max"][name] if parsed["max"] else opt
        for which, shape in (("min", lo), ("opt", opt), ("max", hi)):
            if len(shape) != len(dims):
                raise UsageError(f"--{which}Shapes {name}:{format_shape(shape)} has rank {len(shape)}, the input has "
                                 f"rank {len(dims)} ([{', '.join(str(d) for d in dims)}])")
            for axis, (want, have) in enumerate(zip(dims, shape)):
                if isinstance(want, int) and want > 0 and want != have:
                    raise UsageError(f"--{which}Shapes {name}:{format_shape(shape)}: axis {axis} is fixed to {want} "
                                     f"in {info.path}")
        for axis in range(len(dims)):
            if not lo[axis] <= opt[axis] <= hi[axis]:
                raise UsageError(f"input {name!r} axis {axis}: need min <= opt <= max, got {lo[axis]}, {opt[axis]}, "
                                 f"{hi[axis]} (from --minShapes {format_shape(lo)} --optShapes {format_shape(opt)} "
                                 f"--maxShapes {format_shape(hi)})")
        _check_size_rules(name, {"min": lo, "opt": opt, "max": hi}, info.meta)
        profile[name] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
    return profile


def _check_size_rules(name: str, shapes: dict[str, tuple[int, ...]], meta: dict[str, Any]) -> None:
    """The model's own input rules (export metadata): H, W multiples of size_multiple; H·W >= min_pixels."""
    if not meta:
        return
    m = int(meta.get("size_multiple", 1))
    min_pixels = int(meta.get("min_pixels", 1))
    what = f"{meta.get('model', 'the model')} x{meta.get('scale', '?')}"
    for which, shape in shapes.items():
        if len(shape) != 4:
            continue
        h, w = shape[2], shape[3]
        if h % m or w % m:
            raise UsageError(f"--{which}Shapes {name}:{format_shape(shape)}: {what} takes H and W multiples of {m}")
        if h * w < min_pixels:
            raise UsageError(f"--{which}Shapes {name}:{format_shape(shape)}: {what} needs H·W >= {min_pixels} "
                             f"(smaller inputs are padded by runtime.infer)")
