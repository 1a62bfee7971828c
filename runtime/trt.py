"""TensorRT engine tools: sidecars, targets, the srdeploy plugin library, machine info.

    sidecar = read_sidecar("nlsn_x2.engine")          # what the engine was built for and from
    verify_sidecar(sidecar, machine_info(), find_plugin_library(required=False), engine="nlsn_x2.engine")

Every engine ``X.engine`` written by ``python -m runtime.build`` has a JSON sidecar ``X.engine.json``
(:class:`EngineSidecar`): the TensorRT version, GPU name and compute capability it was built with, the
sha256 of the plugin library and of the ONNX file, the shape profile, the precision, the srdeploy
metadata of the ONNX file (model, scale, size rules) and the command that rebuilds it. A TensorRT
engine runs only with the TensorRT version and the GPU it was built for, and only with the plugin
code it was built with; :func:`verify_sidecar` refuses any other combination before TensorRT is
asked to deserialise anything, with a message that names what differs and how to rebuild.

Two targets (:data:`TARGETS`, the sidecar's ``target``): ``trt``, full TensorRT, engines tied to the
GPU they were built on; ``rtx``, TensorRT for RTX, engines built ahead of time on any machine (no GPU
needed) that compile just in time on a GPU whose compute capability the sidecar lists. The sidecar
picks the Python package that runs the engine.

``runtime.build`` writes engines with these tools; ``runtime.backends.TrtBackend`` runs them. This
module imports the standard library and srdeploy's light base only (no torch; TensorRT loads when
used): everything here except :func:`machine_info` and :func:`load_plugin_library` works without
TensorRT (tests).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import SrdeployError
from models.files import atomic_write, sha256_file
from plugins.build import TRT_LIB_NAME

__all__ = [
    "PLUGIN_LIB_ENV", "PLUGIN_LIB_NAME", "PLUGIN_NAMESPACE", "PLUGIN_VERSION", "SIDECAR_FORMAT", "TARGETS",
    "TENSORRT_API", "FULL_TENSORRT_ONLY",
    "EngineMismatch", "SidecarError", "PluginLibraryNotFound", "TensorRTUnavailable", "TensorRTError",
    "MachineInfo", "EngineSidecar", "sidecar_path", "write_sidecar", "read_sidecar", "verify_sidecar",
    "sha256_file", "find_plugin_library", "default_plugin_library", "load_plugin_library", "machine_info",
    "import_tensorrt", "unavailable_reason", "make_logger", "rebuild_hint",
]

#: ONNX domain of the custom nodes = TensorRT plugin namespace; plugin version (DESIGN.md section 3),
#: restated from models.ops.contract (which loads torch); tests/test_trt.py checks that they agree
PLUGIN_NAMESPACE = "srdeploy"
PLUGIN_VERSION = "1"
PLUGIN_LIB_NAME = TRT_LIB_NAME  # defined once, where the library is built
#: a plugin library to use instead of plugins/build/libsrdeploy_trt_plugins.so
PLUGIN_LIB_ENV = "SRDEPLOY_TRT_PLUGINS"
SIDECAR_FORMAT = 1
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Target:
    """A TensorRT flavour srdeploy builds engines for (``python -m runtime.build --target``)."""
    name: str
    title: str      # for messages
    module: str     # Python package that builds and runs its engines
    install: str    # how to get it


TARGETS = {
    "trt": Target("trt", "TensorRT", "tensorrt",
                  "install TensorRT (pip install tensorrt, needs an NVIDIA GPU and driver)"),
    "rtx": Target("rtx", "TensorRT-RTX", "tensorrt_rtx", "pip install 'srdeploy[rtx]' (tensorrt-rtx-cu13)"),
}

#: Every TensorRT Python name runtime/build.py, this module and runtime/backends/trt_backend.py use, as a path from the package
#: (tests/test_tensorrt_real.py resolves each in the real bindings and checks by an AST scan that no
#: other name is used): "runtime" names against the TensorRT 11 lean runtime (tensorrt-lean-cu13),
#: "builder" names against TensorRT-RTX (tensorrt-rtx-cu13), whose builder and parser share them with
#: full TensorRT. The --target trt build goes through polygraphy's loaders, which own their names.
TENSORRT_API = {
    "runtime": (
        "Runtime", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
        "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
        "ICudaEngine.get_tensor_profile_shape", "ICudaEngine.get_tensor_dtype", "TensorIOMode.INPUT",
        "TensorIOMode.OUTPUT", "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
        "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3", "ILogger",
        "ILogger.Severity.ERROR", "ILogger.Severity.WARNING", "float32", "float16", "int32",
        "get_plugin_registry", "IPluginRegistry.load_library", "IPluginRegistry.get_creator", "__version__",
    ),
    "builder": (
        "Builder", "Builder.create_network", "Builder.create_builder_config", "Builder.create_optimization_profile",
        "Builder.build_serialized_network", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "OnnxParser",
        "OnnxParser.parse", "OnnxParser.num_errors", "OnnxParser.get_error", "IBuilderConfig.set_flag",
        "IBuilderConfig.clear_flag", "IBuilderConfig.add_optimization_profile",
        "IBuilderConfig.builder_optimization_level", "IBuilderConfig.set_memory_pool_limit",
        "IBuilderConfig.num_compute_capabilities", "IBuilderConfig.set_compute_capability",
        "IOptimizationProfile.set_shape", "BuilderFlag.TF32", "ComputeCapability", "MemoryPoolType.WORKSPACE",
        "MemoryPoolType.DLA_MANAGED_SRAM", "MemoryPoolType.DLA_LOCAL_DRAM", "MemoryPoolType.DLA_GLOBAL_DRAM",
        "MemoryPoolType.TACTIC_SHARED_MEMORY",  # by name from runtime.build.MEMORY_POOLS
    ),
}
#: Names in TENSORRT_API that only full TensorRT has (neither package here holds them), with the reason
#: they are still used. None today: every name resolves in the lean runtime or in TensorRT-RTX.
FULL_TENSORRT_ONLY: dict[str, str] = {}

_REPO = Path(__file__).resolve().parents[1]


class TensorRTUnavailable(SrdeployError, RuntimeError):
    """The tensorrt Python package (or a CUDA GPU) is missing."""


class PluginLibraryNotFound(SrdeployError, FileNotFoundError):
    """No srdeploy TensorRT plugin library where one was looked for."""


class SidecarError(SrdeployError, ValueError):
    """An engine's sidecar is missing or unreadable."""


class EngineMismatch(SrdeployError, RuntimeError):
    """An engine was built for another machine, TensorRT version or plugin library."""


class TensorRTError(SrdeployError, RuntimeError):
    """TensorRT refused a plugin library or an engine (its log has the details)."""


# ------------------------------------------------------------------------- plugin library

def default_plugin_library() -> Path:
    """Where ``python -m plugins.build --tensorrt-root DIR`` puts the library."""
    return _REPO / "plugins" / "build" / PLUGIN_LIB_NAME


def find_plugin_library(explicit: str | Path | None = None, *, required: bool = True) -> Path | None:
    """The plugin library to use: ``explicit``, else ``$SRDEPLOY_TRT_PLUGINS``, else the default build
    folder. Raises PluginLibraryNotFound (or returns None when not ``required``) if the chosen file is
    missing; an explicit path or the variable is never silently replaced by the default."""
    if explicit:
        where, path = "given", Path(explicit)
    elif os.environ.get(PLUGIN_LIB_ENV):
        where, path = f"${PLUGIN_LIB_ENV}", Path(os.environ[PLUGIN_LIB_ENV])
    else:
        where, path = "default", default_plugin_library()
    if path.is_file():
        return path.resolve()
    if not required:
        return None
    raise PluginLibraryNotFound(
        f"srdeploy TensorRT plugin library not found ({where}: {path}); build it with "
        f"`python -m plugins.build --tensorrt-root <TensorRT install>` or point {PLUGIN_LIB_ENV} at a built "
        f"{PLUGIN_LIB_NAME}")


# ----------------------------------------------------------------------------- machine info

@dataclass(frozen=True)
class MachineInfo:
    """What an engine is tied to: the TensorRT version and the GPU."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")

    def describe(self) -> str:
        return f"{self.gpu_name} ({self.sm}) with TensorRT {self.tensorrt_version}"


def import_tensorrt(target: str = "trt"):
    """The Python package of ``target`` ("trt": tensorrt, "rtx": tensorrt_rtx); TensorRTUnavailable if absent."""
    t = TARGETS[target]
    try:
        return importlib.import_module(t.module)
    except ImportError as e:
        raise TensorRTUnavailable(f"the {t.module} Python package is not installed ({e}); {t.install} "
                                  f"or use --backend torch / ort") from None


def unavailable_reason(target: str = "trt") -> str | None:
    """Why ``target`` engines cannot run here (None if they can): for skips and benchmark rows."""
    try:
        machine_info(target=target)
    except TensorRTUnavailable as e:
        return str(e)
    return None


def machine_info(device: int | None = None, target: str = "trt") -> MachineInfo:
    """TensorRT version from the target's package, GPU ``device`` (default: torch's current one) from
    torch.cuda. Raises TensorRTUnavailable."""
    trt = import_tensorrt(target)
    import torch  # noqa: PLC0415
    if not torch.cuda.is_available():
        raise TensorRTUnavailable(f"{TARGETS[target].title} engines run on an NVIDIA GPU, and torch sees none "
                                  "(a CUDA build of torch and a GPU are needed to run engines)")
    device = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(device)
    return MachineInfo(str(trt.__version__), torch.cuda.get_device_name(device), f"{major}.{minor}")


# ---------------------------------------------------------------------------------- sidecar

@dataclass
class EngineSidecar:
    """The JSON written next to every engine (``<engine>.json``)."""
    engine: str                                  # file name of the engine
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx: str                                    # path of the ONNX file, as given to runtime.build
    onnx_sha256: str
    shapes: dict[str, dict[str, list[int]]]      # input -> {"min": [...], "opt": [...], "max": [...]}
    precision: str                               # "fp32" / "fp16" (chosen at export, DESIGN.md section 4)
    plugin_library: str | None = None            # path used at build time (None: no custom ops)
    plugin_sha256: str | None = None
    custom_ops: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)   # srdeploy metadata of the ONNX file
    build_options: dict[str, Any] = field(default_factory=dict)
    rebuild_command: str = ""
    created: str = ""
    format: int = SIDECAR_FORMAT
    target: str = "trt"                          # TARGETS: which TensorRT runs it
    # rtx: the compute capabilities ("8.6", ...) the engine may run on (gpu_name and compute_capability are
    # empty: it was built ahead of time, for no GPU in particular); trt: empty (compute_capability decides)
    compute_capabilities: list[str] = field(default_factory=list)

    @property
    def machine(self) -> MachineInfo:
        return MachineInfo(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def describe(self) -> str:
        """What the engine was built for, in words."""
        if self.target == "rtx":
            return (f"TensorRT-RTX {self.tensorrt_version}, compute capability "
                    f"{', '.join(self.compute_capabilities) or '?'}")
        return self.machine.describe()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineSidecar":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise SidecarError(f"sidecar lacks {', '.join(missing)}")
        if data.get("format", SIDECAR_FORMAT) != SIDECAR_FORMAT:
            raise SidecarError(f"sidecar format {data.get('format')} is not {SIDECAR_FORMAT}")
        return cls(**{k: v for k, v in data.items() if k in names})


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def write_sidecar(sidecar: EngineSidecar, engine: str | Path) -> Path:
    """Write ``<engine>.json`` atomically; returns its path."""
    path = sidecar_path(engine)
    if not sidecar.created:
        sidecar.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write(path, sidecar.to_json())
    return path


def read_sidecar(engine: str | Path) -> EngineSidecar:
    path = sidecar_path(engine)
    if not path.is_file():
        raise SidecarError(f"{path} not found: engine {engine} has no sidecar, so whether it fits this machine "
                           f"and plugin library cannot be checked; rebuild it with python -m runtime.build")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SidecarError(f"{path}: unreadable sidecar ({e}); rebuild the engine with python -m runtime.build") from None
    if not isinstance(data, dict):
        raise SidecarError(f"{path}: not a sidecar (a JSON object is expected)")
    try:
        return EngineSidecar.from_dict(data)
    except (SidecarError, TypeError) as e:
        raise SidecarError(f"{path}: {e}; rebuild the engine with python -m runtime.build") from None


def rebuild_hint(sidecar: EngineSidecar, engine: str | Path | None) -> str:
    if sidecar.rebuild_command:
        command = sidecar.rebuild_command
        if "--force" not in command:
            command += " --force"
    else:
        command = (f"python -m runtime.build --onnx {shlex.quote(sidecar.onnx)} "
                   f"--saveEngine {shlex.quote(str(engine or sidecar.engine))} --force")
    return f"rebuild with {command}"


def verify_sidecar(sidecar: EngineSidecar, machine: MachineInfo, plugin_lib: str | Path | None, *,
                   engine: str | Path | None = None, check_engine_hash: bool = True) -> None:
    """Raise EngineMismatch unless the engine fits ``machine`` and ``plugin_lib`` (the library that would
    be loaded; None: none found). Every difference is named; the message ends with the rebuild command."""
    problems: list[str] = []
    built, here = sidecar.machine, machine
    if sidecar.target == "rtx":
        problems += _rtx_problems(sidecar, machine)
    elif (built.tensorrt_version, built.compute_capability, built.gpu_name) != \
            (here.tensorrt_version, here.compute_capability, here.gpu_name):
        what = []
        if built.tensorrt_version != here.tensorrt_version:
            what.append("TensorRT version")
        if built.compute_capability != here.compute_capability:
            what.append("compute capability")
        elif built.gpu_name != here.gpu_name:
            what.append("GPU model")
        problems.append(f"built for {built.describe()}, this machine has {here.describe()} "
                        f"(different {' and '.join(what)})")
    if sidecar.plugin_sha256:
        if plugin_lib is None:
            problems.append(f"it needs the srdeploy plugin library ({', '.join(sidecar.custom_ops) or 'custom ops'}) "
                            f"and none was found (build it with python -m plugins.build --tensorrt-root DIR, or "
                            f"set {PLUGIN_LIB_ENV})")
        else:
            digest = sha256_file(plugin_lib)
            if digest != sidecar.plugin_sha256:
                problems.append(f"plugin library {plugin_lib} (sha256 {digest[:12]}…) is not the one it was built "
                                f"with ({sidecar.plugin_library}, sha256 {sidecar.plugin_sha256[:12]}…)")
    if engine is not None and check_engine_hash:
        path = Path(engine)
        if path.is_file() and sidecar.engine_sha256 and sha256_file(path) != sidecar.engine_sha256:
            problems.append(f"{path} is not the engine this sidecar describes (sha256 differs)")
    if problems:
        name = engine or sidecar.engine
        raise EngineMismatch(f"engine {name} cannot run here: {'; '.join(problems)}: {rebuild_hint(sidecar, engine)}")


def _rtx_problems(sidecar: EngineSidecar, machine: MachineInfo) -> list[str]:
    """An RTX engine runs with its TensorRT-RTX version on a GPU of a compute capability it lists."""
    problems = []
    if sidecar.tensorrt_version != machine.tensorrt_version:
        problems.append(f"built with TensorRT-RTX {sidecar.tensorrt_version}, this machine has TensorRT-RTX "
                        f"{machine.tensorrt_version}")
    if machine.compute_capability not in sidecar.compute_capabilities:
        problems.append(f"it runs on compute capability {', '.join(sidecar.compute_capabilities) or '(none listed)'}, "
                        f"this GPU ({machine.gpu_name}) is {machine.compute_capability} (build it with "
                        f"--computeCapabilities {machine.compute_capability} if TensorRT-RTX supports that GPU)")
    return problems


# ------------------------------------------------------------------------------ TensorRT side

_loaded_libraries: dict[str, Any] = {}


def load_plugin_library(path: str | Path, trt=None) -> None:
    """Register the plugin library's creators with TensorRT's global registry (once per process:
    IPluginRegistry::loadLibrary refuses creators that are already registered)."""
    trt = trt or import_tensorrt()
    key = str(Path(path).resolve())
    if key in _loaded_libraries:
        return
    registry = trt.get_plugin_registry()
    handle = registry.load_library(key)
    if not handle:
        if registry.get_creator("BucketSort", PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:
            raise TensorRTError(f"TensorRT refused the plugin library {key}: the srdeploy plugin creators are already "
                               f"registered in this process (another copy of the library was loaded first; "
                               f"TensorRT registers a creator once), so the engine would run that copy's code")
        raise TensorRTError(f"TensorRT could not load the plugin library {key} (see the TensorRT log above)")
    _loaded_libraries[key] = handle


def make_logger(trt, verbose: bool = False):
    """A logger for ``trt`` (tensorrt or tensorrt_rtx) that forwards warnings and errors to Python logging."""
    import logging  # noqa: PLC0415
    log = logging.getLogger("srdeploy.tensorrt")

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):  # noqa: A003
            if severity <= trt.ILogger.Severity.ERROR:
                log.error(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning(msg)
            elif verbose:
                log.info(msg)

    return Logger()
