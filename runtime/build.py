"""``python -m runtime.build``: ONNX -> TensorRT engine, trtexec-style flags, with a sidecar.

    python -m runtime.build --onnx nlsn_x2.onnx --saveEngine nlsn_x2.engine \\
        --minShapes input:1x3x48x48 --optShapes input:1x3x128x128 --maxShapes input:1x3x256x256

    python -m runtime.build --target rtx --onnx nlsn_x2.onnx --saveEngine nlsn_x2_rtx.engine \\
        --minShapes input:1x3x48x48 --optShapes input:1x3x128x128 --maxShapes input:1x3x256x256

The flags are trtexec's (``--onnx``, ``--saveEngine``, ``--dynamicPlugins``, ``--minShapes`` /
``--optShapes`` / ``--maxShapes``, ``--timingCacheFile``, ``--builderOptimizationLevel``,
``--memPoolSize``, ``--noTF32``, ``--verbose``; TF32 is on unless ``--noTF32``, as in trtexec), with
three differences:

- an existing engine is never replaced without ``--force`` (trtexec overwrites silently);
- when the graph holds srdeploy custom nodes and no ``--dynamicPlugins`` is given, the srdeploy
  plugin library is found as runtime.trt does (``$SRDEPLOY_TRT_PLUGINS``, else
  ``plugins/build/libsrdeploy_trt_plugins.so``);
- the srdeploy nodes get ``plugin_namespace="srdeploy"`` in the copy handed to TensorRT's ONNX
  parser (which looks plugins up by op type, ``plugin_version`` and ``plugin_namespace``; the
  domain is not used). ``--saveOnnx`` writes that copy, for ``trtexec --onnx=...``.

``--target rtx`` builds a TensorRT for RTX engine instead (package ``tensorrt_rtx``): ahead of time, on
any machine, GPU or not, for the compute capabilities ``--computeCapabilities`` names (default:
TensorRT-RTX's own, see :func:`rtx_compute_capabilities`); it compiles just in time on the GPU that
runs it. Plain graphs only (``--ops onnx``): TensorRT-RTX has no plugin support for srdeploy's nodes
and its ONNX parser aborts the process on them, so such a graph is refused before the parser sees it.
The sidecar records the target, the TensorRT-RTX version and the compute capabilities.

Everything is checked before TensorRT is touched (``--dry-run`` stops there and prints the plan):
shape syntax, input names and ranks against the ONNX file, min <= opt <= max, the model's size rules.
The engine is written atomically, then ``<engine>.json`` (runtime.trt.EngineSidecar). Precision comes
from the ONNX file (chosen at export: TensorRT 11 networks are strongly typed).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UsageError

from . import trt as rtrt

PROG = "python -m runtime.build"
EXIT_USAGE = 2
EXIT_BUILD = 1

#: trtexec --memPoolSize names -> tensorrt.MemoryPoolType attribute names
MEMORY_POOLS = {
    "workspace": "WORKSPACE",
    "dlaSRAM": "DLA_MANAGED_SRAM",
    "dlaLocalDRAM": "DLA_LOCAL_DRAM",
    "dlaGlobalDRAM": "DLA_GLOBAL_DRAM",
    "tacticSharedMem": "TACTIC_SHARED_MEMORY",
}
_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class BuildFailed(RuntimeError):
    """TensorRT refused the graph or the build (the parser's own errors are in the message): exit status 1."""


def rtx_compute_capabilities(trt_rtx, text: str | None = None) -> list[str]:
    """``--computeCapabilities 8.6,12.0`` -> ["8.6", "12.0"], checked against ``tensorrt_rtx.ComputeCapability``.

    Without ``text``: what TensorRT-RTX builds for when none is set, every capability of that enum but
    7.5 (its documentation: engines run on 8.0 and later by default; Turing, 7.5, must be asked for)."""
    known = {f"{m[2:-1]}.{m[-1]}": m for m in trt_rtx.ComputeCapability.__members__ if m.startswith("SM")}
    if text is None:
        return sorted((cc for cc in known if cc != "7.5"), key=lambda cc: tuple(map(int, cc.split("."))))
    wanted = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        raise UsageError(f"--computeCapabilities {text!r}: TensorRT-RTX {trt_rtx.__version__} builds for "
                         f"{', '.join(known)} (e.g. --computeCapabilities 8.6,8.9)")
    return list(dict.fromkeys(wanted))


# ------------------------------------------------------------------------------- parsing

def parse_shapes(text: str, flag: str = "--optShapes") -> dict[str, tuple[int, ...]]:
    """trtexec shape syntax: ``name:1x3x64x64[,name2:...]``; a name may be quoted ('a:b':1x2)."""
    shapes: dict[str, tuple[int, ...]] = {}
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
    import onnx  # noqa: PLC0415
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
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    meta = next((json.loads(p.value) for p in model.metadata_props if p.key == "srdeploy"), {})
    return OnnxInfo(path, rtrt.sha256_file(path), inputs, types, custom, meta)


def prepare_onnx_for_tensorrt(model) -> int:
    """Give every srdeploy node ``plugin_namespace="srdeploy"`` and ``plugin_version="1"`` (in place,
    where missing): TensorRT's ONNX parser finds plugins by op type, version and namespace only.
    Returns the number of nodes changed."""
    from onnx import helper  # noqa: PLC0415
    changed = 0
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in g.node:
            if node.domain != rtrt.PLUGIN_NAMESPACE:
                continue
            names = {a.name for a in node.attribute}
            if "plugin_namespace" not in names:
                node.attribute.append(helper.make_attribute("plugin_namespace", rtrt.PLUGIN_NAMESPACE))
            if "plugin_version" not in names:
                node.attribute.append(helper.make_attribute("plugin_version", rtrt.PLUGIN_VERSION))
            changed += 1
    return changed


# ---------------------------------------------------------------------------------- plan

@dataclass
class BuildPlan:
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


def make_profile(info: OnnxInfo, min_shapes: str | None, opt_shapes: str | None,
                 max_shapes: str | None) -> dict[str, dict[str, list[int]]]:
    """One optimisation profile from trtexec-style flags, checked against the ONNX inputs.

    As in trtexec, ``--optShapes`` alone fixes min = opt = max; a missing ``--minShapes`` or
    ``--maxShapes`` takes the ``--optShapes`` value. Inputs with static shapes need no flags."""
    given = {"min": min_shapes, "opt": opt_shapes, "max": max_shapes}
    parsed = {k: parse_shapes(v, f"--{k}Shapes") if v else None for k, v in given.items()}
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


def plan_from_args(args: argparse.Namespace) -> BuildPlan:
    """Everything checked that can be without TensorRT; raises UsageError."""
    info = read_onnx(args.onnx)
    engine = Path(args.saveEngine)
    if engine.is_dir():
        raise UsageError(f"--saveEngine {engine} is a folder; give a file name (e.g. {engine / 'model.engine'})")
    if engine.exists() and not args.force:
        raise UsageError(f"engine {engine} exists; pass --force to replace it")
    if engine.resolve() == info.path.resolve():
        raise UsageError("--saveEngine would overwrite the ONNX file")
    if args.target == "rtx":
        _check_rtx_flags(args, info)
    elif args.computeCapabilities:
        raise UsageError("--computeCapabilities goes with --target rtx (a --target trt engine runs on the GPU "
                         "it was built on)")
    profile = make_profile(info, args.minShapes, args.optShapes, args.maxShapes)
    plugin = None
    if args.dynamicPlugins:
        if len(args.dynamicPlugins) > 1:
            raise UsageError("--dynamicPlugins: give the srdeploy plugin library once")
        plugin = Path(args.dynamicPlugins[0])
        if not plugin.is_file():
            raise UsageError(f"--dynamicPlugins {plugin}: no such file")
        plugin = plugin.resolve()
    elif info.custom_ops:
        foreign = [op for op in info.custom_ops if not op.startswith(f"{rtrt.PLUGIN_NAMESPACE}::")]
        if foreign:
            raise UsageError(f"{info.path} holds custom ops srdeploy has no plugins for: {', '.join(foreign)}")
        try:
            plugin = rtrt.find_plugin_library()
        except rtrt.PluginLibraryNotFound as e:
            raise UsageError(f"{info.path} holds {', '.join(info.custom_ops)}: {e}; or export with --ops onnx") from None
    timing_cache = Path(args.timingCacheFile) if args.timingCacheFile else None
    if args.builderOptimizationLevel is not None and not 0 <= args.builderOptimizationLevel <= 5:
        raise UsageError(f"--builderOptimizationLevel {args.builderOptimizationLevel}: must be 0..5")
    return BuildPlan(
        onnx=info.path, engine=engine, profile=profile, precision=info.precision, onnx_sha256=info.sha256,
        custom_ops=info.custom_ops, plugin_library=plugin, timing_cache=timing_cache,
        builder_optimization_level=args.builderOptimizationLevel,
        mem_pool=parse_mem_pool(args.memPoolSize) if args.memPoolSize else {},
        verbose=args.verbose, force=args.force, save_onnx=Path(args.saveOnnx) if args.saveOnnx else None,
        model=info.meta, target=args.target, tf32=not args.noTF32, compute_capabilities=args.computeCapabilities)


def _check_rtx_flags(args: argparse.Namespace, info: OnnxInfo) -> None:
    """--target rtx takes plain graphs only; refused here, before TensorRT-RTX's parser (which aborts the
    whole process on an srdeploy node) ever sees one."""
    if info.custom_ops:
        raise UsageError(f"--target rtx: {info.path} holds {', '.join(info.custom_ops)}, which TensorRT-RTX cannot "
                         f"build (no srdeploy plugins there); export with --ops onnx or use --target trt")
    if args.dynamicPlugins:
        raise UsageError("--target rtx: --dynamicPlugins is not supported (TensorRT-RTX builds plain graphs only)")
    if args.computeCapabilities and not re.fullmatch(r"\d+\.\d+(,\d+\.\d+)*", args.computeCapabilities.replace(" ", "")):
        raise UsageError(f"--computeCapabilities {args.computeCapabilities!r}: expected major.minor[,major.minor], "
                         f"e.g. 8.6,8.9")
    if args.timingCacheFile:
        raise UsageError("--target rtx: --timingCacheFile is not supported (TensorRT-RTX tunes just in time on "
                         "the GPU that runs the engine)")


# --------------------------------------------------------------------------------- build

def onnx_bytes_for_tensorrt(path: Path) -> bytes:
    import onnx  # noqa: PLC0415
    model = onnx.load(str(path))  # external data inlined: the parser gets one buffer
    prepare_onnx_for_tensorrt(model)
    return model.SerializeToString()


def build_engine(plan: BuildPlan) -> rtrt.EngineSidecar:
    """Build for the plan's target; write the engine and its sidecar atomically."""
    if plan.target == "rtx":
        engine_bytes, seconds, sidecar = _build_rtx(plan)
    else:
        engine_bytes, seconds, sidecar = _build_trt(plan)
    if plan.engine.exists() and not plan.force:  # appeared while building
        raise UsageError(f"engine {plan.engine} appeared during the build; pass --force to replace it")
    rtrt.atomic_write_bytes(plan.engine, engine_bytes)
    sidecar.engine_sha256 = rtrt.sha256_file(plan.engine)
    sidecar.build_options["build_seconds"] = round(seconds, 2)
    rtrt.write_sidecar(sidecar, plan.engine)
    return sidecar


def _build_trt(plan: BuildPlan) -> tuple[bytes, float, rtrt.EngineSidecar]:
    """Full TensorRT through polygraphy's loaders (needs a GPU: the engine is tuned for it)."""
    trt = rtrt.import_tensorrt()
    from polygraphy.backend.trt import (  # noqa: PLC0415
        CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxBytes, Profile)
    from polygraphy.logger import G_LOGGER  # noqa: PLC0415

    G_LOGGER.module_severity = G_LOGGER.EXTRA_VERBOSE if plan.verbose else G_LOGGER.WARNING
    machine = rtrt.machine_info()
    if plan.plugin_library is not None:
        rtrt.load_plugin_library(plan.plugin_library, trt)
    model_bytes = onnx_bytes_for_tensorrt(plan.onnx)
    if plan.save_onnx:
        rtrt.atomic_write_bytes(plan.save_onnx, model_bytes)
    profile = Profile()
    for name, p in plan.profile.items():
        profile.add(name, min=p["min"], opt=p["opt"], max=p["max"])
    pools = {getattr(trt.MemoryPoolType, MEMORY_POOLS[k]): v for k, v in plan.mem_pool.items()}
    config = CreateConfig(
        profiles=[profile] if plan.profile else None,
        load_timing_cache=str(plan.timing_cache) if plan.timing_cache and plan.timing_cache.exists() else None,
        builder_optimization_level=plan.builder_optimization_level,
        memory_pool_limits=pools or None, tf32=plan.tf32)
    network = NetworkFromOnnxBytes(model_bytes, strongly_typed=True)
    start = time.perf_counter()
    engine_bytes = EngineBytesFromNetwork(
        network, config=config, save_timing_cache=str(plan.timing_cache) if plan.timing_cache else None)()
    seconds = time.perf_counter() - start
    return bytes(engine_bytes), seconds, sidecar_for(plan, machine, "", seconds)


def _build_rtx(plan: BuildPlan) -> tuple[bytes, float, rtrt.EngineSidecar]:
    """TensorRT-RTX through its own API (polygraphy picks TensorRT-RTX only by an environment variable read
    at its import, for the whole process). Ahead of time: no GPU is needed."""
    trt = rtrt.import_tensorrt("rtx")
    capabilities = rtx_compute_capabilities(trt, plan.compute_capabilities)
    logger = rtrt.make_logger(trt, plan.verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    model_bytes = onnx_bytes_for_tensorrt(plan.onnx)
    if plan.save_onnx:
        rtrt.atomic_write_bytes(plan.save_onnx, model_bytes)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
        raise BuildFailed(f"TensorRT-RTX's ONNX parser rejected {plan.onnx}: {errors or 'no reason given'}")
    config = builder.create_builder_config()
    if plan.tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.compute_capabilities:
        config.num_compute_capabilities = len(capabilities)
        for i, cc in enumerate(capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
    if plan.builder_optimization_level is not None:
        config.builder_optimization_level = plan.builder_optimization_level
    for pool, size in plan.mem_pool.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, MEMORY_POOLS[pool]), size)
    if plan.profile:
        profile = builder.create_optimization_profile()
        for name, p in plan.profile.items():
            profile.set_shape(name, p["min"], p["opt"], p["max"])
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise BuildFailed(f"TensorRT-RTX could not build {plan.onnx} (its log above says why)")
    # Built ahead of time for no GPU in particular: the sidecar lists where it may run instead.
    machine = rtrt.MachineInfo(str(trt.__version__), "", "")
    return bytes(serialized), seconds, sidecar_for(plan, machine, "", seconds, capabilities)


def sidecar_for(plan: BuildPlan, machine: rtrt.MachineInfo, engine_sha256: str, seconds: float | None = None,
                compute_capabilities: list[str] | None = None) -> rtrt.EngineSidecar:
    needs_plugins = bool(plan.custom_ops) and plan.plugin_library is not None
    return rtrt.EngineSidecar(
        engine=plan.engine.name, engine_sha256=engine_sha256,
        tensorrt_version=machine.tensorrt_version, gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability,
        onnx=str(plan.onnx), onnx_sha256=plan.onnx_sha256, shapes=plan.profile, precision=plan.precision,
        plugin_library=str(plan.plugin_library) if needs_plugins else None,
        plugin_sha256=rtrt.sha256_file(plan.plugin_library) if needs_plugins else None,
        custom_ops=plan.custom_ops, model=plan.model,
        build_options={"builder_optimization_level": plan.builder_optimization_level, "mem_pool": plan.mem_pool,
                       "timing_cache": str(plan.timing_cache) if plan.timing_cache else None, "tf32": plan.tf32,
                       "build_seconds": round(seconds, 2) if seconds is not None else None},
        rebuild_command=plan.command(), target=plan.target, compute_capabilities=list(compute_capabilities or []))


def build(onnx: str | Path, engine: str | Path, *, opt_shapes: str | None = None, min_shapes: str | None = None,
          max_shapes: str | None = None, force: bool = False, plugin_library: str | Path | None = None,
          timing_cache: str | Path | None = None, verbose: bool = False, target: str = "trt",
          tf32: bool = True) -> rtrt.EngineSidecar:
    """The CLI as a function (benchmarks): same flags, same checks; raises UsageError / TensorRTUnavailable /
    BuildFailed."""
    argv = ["--target", target, "--onnx", str(onnx), "--saveEngine", str(engine)] + ["--noTF32"] * (not tf32)
    for flag, value in (("--optShapes", opt_shapes), ("--minShapes", min_shapes), ("--maxShapes", max_shapes),
                        ("--dynamicPlugins", plugin_library), ("--timingCacheFile", timing_cache)):
        if value:
            argv += [flag, str(value)]
    argv += ["--force"] * force + ["--verbose"] * verbose
    return build_engine(plan_from_args(build_parser().parse_args(argv)))


# ----------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build a TensorRT engine from an srdeploy ONNX file (trtexec-style flags) and write "
                    "<engine>.json next to it (TensorRT version, GPU, plugin and ONNX sha256, shapes, precision).",
        epilog="examples:\n"
               f"  {PROG} --onnx nlsn_x2.onnx --saveEngine nlsn_x2.engine \\\n"
               "      --minShapes input:1x3x48x48 --optShapes input:1x3x128x128 --maxShapes input:1x3x256x256\n"
               f"  {PROG} --onnx csnln_x4_fp16.onnx --saveEngine csnln.engine --optShapes input:1x3x96x96 "
               "--timingCacheFile tc.cache --force\n"
               f"  {PROG} --onnx nlsn_x2.onnx --saveEngine x.engine --optShapes input:1x3x64x64 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=list(rtrt.TARGETS), default="trt",
                   help="trt: TensorRT, built on and for this machine's GPU (default); rtx: TensorRT for RTX, "
                        "built ahead of time on any machine (no GPU needed), plain --ops onnx graphs only")
    p.add_argument("--onnx", required=True, metavar="PATH", help="ONNX file (python -m export.onnx)")
    p.add_argument("--saveEngine", required=True, metavar="PATH", help="engine file to write (atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing engine (never done without it)")
    p.add_argument("--dynamicPlugins", action="append", metavar="LIB",
                   help=f"plugin library (default when the graph has srdeploy nodes: ${rtrt.PLUGIN_LIB_ENV}, else "
                        f"plugins/build/{rtrt.PLUGIN_LIB_NAME})")
    s = p.add_argument_group("shapes (trtexec syntax: name:1x3x64x64[,name2:...])")
    s.add_argument("--minShapes", metavar="SPEC", help="smallest input shapes of the profile (default: --optShapes)")
    s.add_argument("--optShapes", metavar="SPEC", help="shapes TensorRT tunes for")
    s.add_argument("--maxShapes", metavar="SPEC", help="largest input shapes of the profile (default: --optShapes)")
    b = p.add_argument_group("builder")
    b.add_argument("--timingCacheFile", metavar="PATH", help="timing cache to read (if present) and update")
    b.add_argument("--builderOptimizationLevel", type=int, metavar="N", help="0..5 (TensorRT default 3)")
    b.add_argument("--memPoolSize", metavar="SPEC",
                   help="pool:size[B|K|M|G] (MiB when no unit), pools: " + ", ".join(MEMORY_POOLS))
    b.add_argument("--noTF32", action="store_true",
                   help="no TF32 for fp32 matrix products and convolutions (on by default, as in trtexec)")
    b.add_argument("--computeCapabilities", metavar="LIST",
                   help="--target rtx: compute capabilities to build for, e.g. 8.6,8.9 (default: TensorRT-RTX's, "
                        "8.0 and later)")
    b.add_argument("--saveOnnx", metavar="PATH",
                   help="also write the ONNX copy given to TensorRT (srdeploy nodes with plugin_namespace), "
                        "for trtexec --onnx=")
    o = p.add_argument_group("output")
    o.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    o.add_argument("--dry-run", action="store_true", help="check everything, print the build plan as JSON, build nothing")
    return p


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
    except UsageError as e:
        _error(str(e))
        return EXIT_USAGE
    if args.dry_run:
        print(json.dumps({**plan.to_dict(), "command": plan.command()}, indent=2))
        return 0
    try:
        sidecar = build_engine(plan)
    except (UsageError, rtrt.TensorRTUnavailable, rtrt.PluginLibraryNotFound) as e:
        _error(str(e))
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 (TensorRT/polygraphy failures: one line, the log has the rest)
        _error(f"the build failed: {e}")
        return EXIT_BUILD
    print(f"wrote {plan.engine} and {rtrt.sidecar_path(plan.engine)} ({sidecar.precision}, "
          f"{sidecar.describe()}, {sidecar.build_options.get('build_seconds')} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
