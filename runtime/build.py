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

The same from Python (the command line is a thin layer over it; nothing goes through argv):

    from runtime.build import make_plan, build
    plan = make_plan("nlsn_x2.onnx", "nlsn_x2.engine", opt_shapes={"input": (1, 3, 128, 128)}, force=True)
    result = build(plan)          # BuildResult: engine, sidecar_path, sidecar, seconds

:func:`make_plan` (runtime/build_plan.py) does every check and writes nothing; :func:`build` does the
TensorRT work. The keywords are the flags' (``opt_shapes`` is ``--optShapes``, ``plugin_library`` is
``--dynamicPlugins``, ``tf32=False`` is ``--noTF32``), and so are the error messages.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from models.errors import OutputExistsError, SrdeployError, UsageError
from models.files import atomic_write

from . import trt as rtrt
from .build_plan import (MEMORY_POOLS, PROG, BuildPlan, OnnxInfo, format_shape, make_plan, make_profile,
                         parse_mem_pool, parse_shapes, read_onnx)

__all__ = ["make_plan", "build", "BuildPlan", "BuildResult", "BuildFailed", "UsageError", "OnnxInfo", "read_onnx",
           "make_profile", "parse_shapes", "parse_mem_pool", "format_shape", "MEMORY_POOLS",
           "rtx_compute_capabilities", "prepare_onnx_for_tensorrt", "onnx_bytes_for_tensorrt", "sidecar_for",
           "build_parser", "plan_from_args", "main"]

EXIT_USAGE = 2
EXIT_BUILD = 1


class BuildFailed(SrdeployError, RuntimeError):
    """TensorRT refused the graph or the build (the parser's own errors are in the message): exit status 1."""


@dataclass
class BuildResult:
    """What :func:`build` wrote: the engine, its sidecar (``<engine>.json``) and the build time."""
    engine: Path
    sidecar_path: Path
    sidecar: rtrt.EngineSidecar
    seconds: float


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


# --------------------------------------------------------------------------------- build

def prepare_onnx_for_tensorrt(model) -> int:
    """Give every srdeploy node ``plugin_namespace`` and ``plugin_version`` (the op contract's DOMAIN and
    VERSION; in place, where missing): TensorRT's ONNX parser finds plugins by op type, version and
    namespace only. Returns the number of nodes changed."""
    from onnx import helper  # noqa: PLC0415

    from models.ops.contract import DOMAIN, VERSION  # noqa: PLC0415
    changed = 0
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in g.node:
            if node.domain != DOMAIN:
                continue
            names = {a.name for a in node.attribute}
            if "plugin_namespace" not in names:
                node.attribute.append(helper.make_attribute("plugin_namespace", DOMAIN))
            if "plugin_version" not in names:
                node.attribute.append(helper.make_attribute("plugin_version", str(VERSION)))
            changed += 1
    return changed


def onnx_bytes_for_tensorrt(path: Path) -> bytes:
    import onnx  # noqa: PLC0415
    model = onnx.load(str(path))  # external data inlined: the parser gets one buffer
    prepare_onnx_for_tensorrt(model)
    return model.SerializeToString()


def _onnx_for_the_parser(plan: BuildPlan) -> bytes:
    """The ONNX bytes handed to TensorRT's parser; also written to ``--saveOnnx`` when asked."""
    model_bytes = onnx_bytes_for_tensorrt(plan.onnx)
    if plan.save_onnx:
        atomic_write(plan.save_onnx, model_bytes)
    return model_bytes


def build(plan: BuildPlan) -> BuildResult:
    """Build the engine of a plan (:func:`make_plan`) for its target; write the engine, then its sidecar,
    atomically. Raises TensorRTUnavailable, UsageError (the engine appeared meanwhile and ``force`` is
    off), BuildFailed, or what TensorRT/polygraphy raise."""
    if plan.target == "rtx":
        engine_bytes, seconds, sidecar = _build_rtx(plan)
    else:
        engine_bytes, seconds, sidecar = _build_trt(plan)
    try:
        atomic_write(plan.engine, engine_bytes, overwrite=plan.force)
    except OutputExistsError:  # appeared while building
        raise UsageError(f"engine {plan.engine} appeared during the build; pass --force to replace it") from None
    sidecar.engine_sha256 = rtrt.sha256_file(plan.engine)
    sidecar.build_options["build_seconds"] = round(seconds, 2)
    return BuildResult(plan.engine, rtrt.write_sidecar(sidecar, plan.engine), sidecar, seconds)


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
    model_bytes = _onnx_for_the_parser(plan)
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
    model_bytes = _onnx_for_the_parser(plan)
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
    p.add_argument("--force", action="store_true",
                   help="replace an existing engine or --saveOnnx file (never done without it)")
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


def plan_from_args(args: argparse.Namespace) -> BuildPlan:
    """The command line's plan (:func:`make_plan` on the parsed flags); raises UsageError."""
    plugins = args.dynamicPlugins or []
    if len(plugins) > 1:
        raise UsageError("--dynamicPlugins: give the srdeploy plugin library once")
    return make_plan(
        args.onnx, args.saveEngine, min_shapes=args.minShapes, opt_shapes=args.optShapes, max_shapes=args.maxShapes,
        target=args.target, plugin_library=plugins[0] if plugins else None, timing_cache=args.timingCacheFile,
        builder_optimization_level=args.builderOptimizationLevel, mem_pool=args.memPoolSize, tf32=not args.noTF32,
        compute_capabilities=args.computeCapabilities, save_onnx=args.saveOnnx, force=args.force,
        verbose=args.verbose)


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
    except SrdeployError as e:
        _error(str(e))
        return EXIT_USAGE
    if args.dry_run:
        print(json.dumps({**plan.to_dict(), "command": plan.command()}, indent=2))
        return 0
    try:
        result = build(plan)
    except (BuildFailed, rtrt.TensorRTError) as e:  # TensorRT refused the graph or the plugin library
        _error(f"the build failed: {e}")
        return EXIT_BUILD
    except SrdeployError as e:
        _error(str(e))
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 (TensorRT/polygraphy failures: one line, the log has the rest)
        _error(f"the build failed: {e}")
        return EXIT_BUILD
    print(f"wrote {result.engine} and {result.sidecar_path} ({result.sidecar.precision}, "
          f"{result.sidecar.describe()}, {result.sidecar.build_options.get('build_seconds')} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
