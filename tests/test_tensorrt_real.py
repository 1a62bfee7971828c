"""Real TensorRT on the CPU, no mocks: the two TensorRT packages that run without a GPU (DESIGN §9).

- TensorRT 11 lean runtime (``tensorrt_lean``, pip ``tensorrt-lean-cu13``): the srdeploy plugin library
  in TensorRT's plugin registry: exactly three creators under ``srdeploy``/``"1"`` whose fields are the op
  contract (``models/ops/contract.py``), ``create_plugin`` at BUILD and RUNTIME phase, bad attributes
  refused with a logged reason, a second load refused and said so.
- TensorRT for RTX (``tensorrt_rtx``, pip ``tensorrt-rtx-cu13``): TensorRT's ONNX parser and builder on
  every ``--ops onnx`` export (NLSN, CSNLN, EDSR; x2/x3/x4; fp32/fp16; dynamic/fixed size) through
  ``python -m runtime.build --target rtx``, the product's own command; build time and engine size per
  graph are printed at the end of the run. Plugin graphs are refused before the parser sees them.
- Every TensorRT name runtime/build.py, runtime/trt.py and runtime/backends/trt_backend.py use resolves in
  the real bindings.

Each TensorRT call runs in a subprocess: an abort (TensorRT's parser calls std::terminate on some
input) is a failed test with its output, not a dead test run. Running an engine needs a GPU: not here.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import test_export  # its small configurations and its session cache of exports
from conftest import REPO
from export.onnx import export_model
from models.ops import contract
from runtime import build as rb
from runtime import trt as rtrt

LEAN, RTX = "tensorrt_lean", "tensorrt_rtx"
PIN = "pip install -e '.[dev]' (pins tensorrt-lean-cu13 and tensorrt-rtx-cu13)"
#: the contract's attribute types -> TensorRT plugin field types
FIELD_TYPES = {"INT": "INT32", "FLOAT": "FLOAT32"}


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: {PIN}")


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (the repository first on sys.path); never raises on its exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    """stdout of a subprocess that must have succeeded; otherwise the test fails with all it printed."""
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode} (TensorRT aborted)" if proc.returncode < 0 else \
            f"exit status {proc.returncode}"
        pytest.fail(f"{proc.args[0]} -c ... {' '.join(proc.args[3:])}: {how}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc.stdout


# ------------------------------------------------------------------------ the plugin library

# The library comes from the session fixture trt_plugins_lib (tests/conftest.py).

LEAN_PRELUDE = """
    import json, sys
    import numpy as np
    import tensorrt_lean as trt
    LIB = sys.argv[1]
    registry = trt.get_plugin_registry()
    assert registry.load_library(LIB), "load_library failed"

    def field(name, value, kind):
        dtype = {"INT32": np.int32, "FLOAT32": np.float32}[kind]
        return trt.PluginField(name, np.array([value], dtype), getattr(trt.PluginFieldType, kind))

    def create(op, fields, phase="BUILD"):
        creator = registry.get_creator(op, "1", "srdeploy")
        return creator.create_plugin(op, trt.PluginFieldCollection(fields), getattr(trt.TensorRTPhase, phase))
"""


def lean_code(snippet: str) -> str:
    """A script: the prelude (the library loaded into tensorrt_lean's registry, helpers), then ``snippet``."""
    return textwrap.dedent(LEAN_PRELUDE) + textwrap.dedent(snippet)


def test_registry_holds_exactly_the_three_creators_of_the_contract(trt_plugins_lib):
    need(LEAN)
    out = ok(run_python(lean_code("""
        print(json.dumps({"version": trt.__version__, "creators": [
            {"name": c.name, "version": c.plugin_version, "namespace": c.plugin_namespace,
             "class": type(c).__name__, "fields": [[f.name, f.type.name] for f in c.field_names]}
            for c in registry.all_creators if c.plugin_namespace == "srdeploy"]}))
    """), str(trt_plugins_lib)))
    found = json.loads(out.splitlines()[-1])
    assert found["version"].startswith("11.")
    creators = {c["name"]: c for c in found["creators"]}
    assert len(found["creators"]) == 3 and set(creators) == set(contract.OPS)
    for name, op in contract.OPS.items():
        c = creators[name]
        assert (c["namespace"], c["version"]) == (contract.DOMAIN, str(contract.VERSION)) == ("srdeploy", "1")
        assert c["class"] == "IPluginCreatorV3One"
        assert c["fields"] == [[a.name, FIELD_TYPES[a.type]] for a in op.attributes], name


def test_create_plugin_at_build_and_runtime_phase(trt_plugins_lib):
    need(LEAN)
    out = ok(run_python(lean_code("""
        GOOD = {"BucketSort": [field("num_buckets", 256, "INT32")],
                "BucketAttention": [field("chunk_size", 16, "INT32"), field("n_hashes", 2, "INT32"),
                                    field("eps", 5e-5, "FLOAT32")],
                "CrossScaleFold": [field("stride", 2, "INT32"), field("padding", 2, "INT32")]}
        for op, fields in GOOD.items():
            for phase in ("BUILD", "RUNTIME"):
                plugin = create(op, fields, phase)
                print(op, phase, type(plugin).__name__ if plugin is not None else None)
    """), str(trt_plugins_lib)))
    lines = [line for line in out.splitlines() if line.split()[0] in contract.OPS]
    assert len(lines) == 6 and all(line.endswith(" IPluginV3") for line in lines), out


@pytest.mark.parametrize("op,fields,reason", [
    ("BucketAttention", '[field("n_hashes", 2, "INT32"), field("eps", 5e-5, "FLOAT32")]',
     "BucketAttention: attribute chunk_size is missing"),
    ("BucketAttention", '[field("chunk_size", 0, "INT32"), field("n_hashes", 2, "INT32"), field("eps", 5e-5, "FLOAT32")]',
     "BucketAttention: chunk_size must be > 0, got 0"),
    ("CrossScaleFold", '[field("stride", -2, "INT32"), field("padding", 2, "INT32")]',
     "CrossScaleFold: stride must be > 0, got -2"),
    ("CrossScaleFold", '[field("stride", 2, "INT32"), field("padding", -1, "INT32")]',
     "CrossScaleFold: padding must be >= 0, got -1"),
    ("BucketAttention", '[field("chunk_size", 16.0, "FLOAT32"), field("n_hashes", 2, "INT32"), '
                        'field("eps", 5e-5, "FLOAT32")]', "BucketAttention: attribute chunk_size must be an integer"),
    ("BucketSort", '[field("num_buckets", 256.0, "FLOAT32")]', "BucketSort: attribute num_buckets must be an integer"),
    ("BucketSort", '[field("num_buckets", 0, "INT32")]', "BucketSort: num_buckets must be > 0, got 0"),
], ids=["no-chunk_size", "chunk_size-0", "negative-stride", "negative-padding", "chunk_size-float",
        "num_buckets-float", "num_buckets-0"])
def test_bad_attributes_are_refused_with_a_logged_reason(trt_plugins_lib, op, fields, reason):
    need(LEAN)
    proc = run_python(lean_code(f"""
        plugin = create({op!r}, {fields})
        print("refused" if plugin is None else "accepted")
    """), str(trt_plugins_lib))
    out = ok(proc)  # no crash
    assert out.splitlines()[-1] == "refused"
    logged = [line for line in (proc.stdout + proc.stderr).splitlines() if "[srdeploy]" in line]
    assert logged and reason in logged[0], proc.stderr


def test_loading_the_library_twice_says_so(trt_plugins_lib, tmp_path):
    need(LEAN)
    copy = tmp_path / trt_plugins_lib.name
    copy.write_bytes(trt_plugins_lib.read_bytes())
    out = ok(run_python("""
        import sys
        import tensorrt_lean as trt
        from runtime import trt as rtrt
        registry = trt.get_plugin_registry()
        rtrt.load_plugin_library(sys.argv[1], trt)
        rtrt.load_plugin_library(sys.argv[1], trt)              # srdeploy's loader: once per process, quietly
        print("raw second load:", registry.load_library(sys.argv[1]))  # TensorRT itself refuses: None
        try:
            rtrt.load_plugin_library(sys.argv[2], trt)          # another copy of the same creators
            print("second copy: loaded")
        except RuntimeError as e:
            print("second copy:", e)
        print(len([c for c in registry.all_creators if c.plugin_namespace == "srdeploy"]), "creators")
    """, str(trt_plugins_lib), str(copy)))
    assert "raw second load: None" in out
    assert f"second copy: TensorRT refused the plugin library {copy}: the srdeploy plugin creators are " \
           f"already registered in this process" in out
    assert out.splitlines()[-1] == "3 creators"


# ------------------------------------------------------------- ONNX parser + builder (RTX)

FIXED = 24                                      # fixed-size exports: 24x24 (a multiple of 2 and 3)
PROFILE = ("input:1x3x12x12", "input:1x3x24x24", "input:1x3x48x48")  # dynamic exports: min, opt, max
GRAPHS = [(name, scale, precision, size) for name in test_export.SMALL for scale in (2, 3, 4)
          for precision in ("fp32", "fp16") for size in ("dynamic", "fixed")]
_BUILDS: list[dict] = []


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory):
    """(name, scale, mode, precision, size) -> ONNX path, each exported once per session, with the small
    configurations of tests/test_export.py. Dynamic exports go through that module's session cache (the
    same module object pytest runs), so a graph it already exported is not exported again."""
    root = tmp_path_factory.mktemp("trt_exports")
    fixed: dict[tuple, Path] = {}

    def get(name, scale, mode, precision, size):
        key = (name, scale, mode, precision)
        cache = test_export._CACHE if size == "dynamic" else fixed
        if key not in cache:
            model = test_export.small_model(name, scale)
            path = root / f"{name}_x{scale}_{mode}_{precision}_{size}.onnx"
            result = export_model(model, path, mode=mode, precision=precision,
                                  size=(FIXED, FIXED) if size == "fixed" else None, check=False)
            cache[key] = (model, path, result)
        return cache[key][1]

    return get


def rtx_build(onnx: Path, engine: Path, *flags: str) -> subprocess.CompletedProcess:
    return run_python("import sys; from runtime.build import main; sys.exit(main(sys.argv[1:]))",
                      "--target", "rtx", "--onnx", str(onnx), "--saveEngine", str(engine), *flags)


@pytest.fixture(scope="module", autouse=True)
def build_table(request):
    """Print build time and engine size per graph at the end of the module (the test log)."""
    yield
    if not _BUILDS:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"TensorRT-RTX {_BUILDS[0]['version']} builds (python -m runtime.build --target rtx, CPU):",
             f"{'graph':<32} {'build s':>8} {'engine KiB':>11}"]
    lines += [f"{b['graph']:<32} {b['seconds']:>8.2f} {b['bytes'] / 1024:>11.0f}" for b in _BUILDS]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # past pytest's output capture, into the run's log
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.mark.slow
@pytest.mark.parametrize("name,scale,precision,size", GRAPHS, ids=["-".join(map(str, g)) for g in GRAPHS])
def test_every_plain_export_parses_and_builds_with_tensorrt_rtx(onnx_export, tmp_path, record_property,
                                                                  name, scale, precision, size):
    need(RTX)
    onnx = onnx_export(name, scale, "onnx", precision, size)
    engine = tmp_path / "model.engine"
    shapes = [f"input:1x3x{FIXED}x{FIXED}"] * 3 if size == "fixed" else PROFILE
    ok(rtx_build(onnx, engine, "--minShapes", shapes[0], "--optShapes", shapes[1], "--maxShapes", shapes[2]))
    sidecar = rtrt.read_sidecar(engine)
    assert sidecar.target == "rtx" and sidecar.precision == precision
    assert sidecar.shapes["input"]["max"] == [int(d) for d in shapes[2].split(":")[1].split("x")]
    assert sidecar.engine_sha256 == rtrt.sha256_file(engine) and engine.stat().st_size > 10_000
    graph = f"{name} x{scale} {precision} {size}"
    row = {"graph": graph, "seconds": sidecar.build_options["build_seconds"], "bytes": engine.stat().st_size,
           "version": sidecar.tensorrt_version}
    _BUILDS.append(row)
    record_property("rtx_build", row)


def test_rtx_target_end_to_end(onnx_export, tmp_path):
    """The RTX target on the CLI: engine + sidecar (target, version, compute capabilities, TF32), --noTF32
    and --computeCapabilities recorded, the rebuild command reproduces the plan; running it needs a GPU."""
    need(RTX)
    onnx = onnx_export("edsr", 2, "onnx", "fp32", "dynamic")
    engine = tmp_path / "edsr.engine"
    out = ok(rtx_build(onnx, engine, *[f"--{w}Shapes={s}" for w, s in zip(("min", "opt", "max"), PROFILE)],
                       "--noTF32", "--computeCapabilities", "8.6,12.0"))
    assert out.startswith(f"wrote {engine} and {engine}.json (fp32, TensorRT-RTX 1.7")
    side = rtrt.read_sidecar(engine)
    assert side.target == "rtx" and side.tensorrt_version.startswith("1.7")
    assert side.compute_capabilities == ["8.6", "12.0"] and side.build_options["tf32"] is False
    assert "--target rtx" in side.rebuild_command and "--noTF32" in side.rebuild_command
    assert side.gpu_name == "" and side.plugin_library is None
    # default: TF32 on (trtexec's default) and TensorRT-RTX's own capabilities (8.0 and later, no 7.5)
    default = tmp_path / "default.engine"
    ok(rtx_build(onnx, default, "--optShapes", PROFILE[1]))
    side = rtrt.read_sidecar(default)
    assert side.build_options["tf32"] is True and "7.5" not in side.compute_capabilities
    assert {"8.0", "8.6", "8.9", "12.0"} <= set(side.compute_capabilities)
    # runtime.infer's backend picks TensorRT-RTX from the sidecar and says why it cannot run here
    proc = run_python("""
        import sys
        from runtime import trt as rtrt
        from runtime.backends import TrtBackend
        try:
            TrtBackend(sys.argv[1])
        except rtrt.TensorRTUnavailable as e:
            print("refused:", e)
    """, str(default))
    assert f"refused: engine {default} (TensorRT-RTX 1.7" in ok(proc)
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: what happens here is the GPU test's business")
    assert "TensorRT-RTX engines run on an NVIDIA GPU, and torch sees none" in proc.stdout
    # ... and so does python -m runtime.infer: one line, exit 2, nothing written
    out_png = tmp_path / "sr.png"
    infer = run_python("import sys; from runtime.infer import main; sys.exit(main(sys.argv[1:]))", "--backend", "trt",
                       "--engine", str(default), "-i", str(REPO / "runtime" / "samples" / "sample.png"),
                       "-o", str(out_png))
    assert infer.returncode == 2, infer.stderr
    err = infer.stderr.strip().splitlines()
    assert len(err) == 1 and f"engine {default} (TensorRT-RTX 1.7" in err[0] and "torch sees none" in err[0]
    assert not out_png.exists()


def test_plugin_graph_with_rtx_target_is_refused_before_the_parser(onnx_export, tmp_path):
    need(RTX)
    onnx = onnx_export("csnln", 2, "plugin", "fp32", "dynamic")
    engine = tmp_path / "p.engine"
    proc = rtx_build(onnx, engine, "--optShapes", PROFILE[1])
    assert proc.returncode == rb.EXIT_USAGE, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err == [f"python -m runtime.build: error: --target rtx: {onnx} holds srdeploy::CrossScaleFold, which "
                   f"TensorRT-RTX cannot build (no srdeploy plugins there); export with --ops onnx or use --target trt"]
    assert not engine.exists() and not rtrt.sidecar_path(engine).exists()


# ------------------------------------------------------------------- names in the bindings

@pytest.mark.parametrize("group,module", [("runtime", LEAN), ("runtime", RTX), ("builder", RTX)])
def test_every_tensorrt_name_used_exists_in_the_real_bindings(group, module):
    need(module)
    out = ok(run_python("""
        import importlib, json, sys
        from runtime import trt as rtrt
        trt = importlib.import_module(sys.argv[1])
        def resolves(dotted):
            obj = trt
            for part in dotted.split("."):
                if not hasattr(obj, part):
                    return False
                obj = getattr(obj, part)
            return True
        print(json.dumps([n for n in rtrt.TENSORRT_API[sys.argv[2]] if not resolves(n)]))
    """, module, group))
    missing = set(json.loads(out.splitlines()[-1])) - set(rtrt.FULL_TENSORRT_ONLY)
    assert not missing, f"{module} lacks {sorted(missing)}: fix the code or list them in runtime.trt.FULL_TENSORRT_ONLY"


#: receivers of TensorRT objects in the modules of TENSORRT_SOURCES -> their TensorRT class
RECEIVERS = {"self.engine": "ICudaEngine", "self.context": "IExecutionContext", "self.runtime": "Runtime",
             "registry": "IPluginRegistry", "builder": "Builder", "parser": "OnnxParser", "config": "IBuilderConfig",
             "network": "INetworkDefinition", "profile": "IOptimizationProfile"}
#: the modules that call TensorRT
TENSORRT_SOURCES = [REPO / "runtime" / "build.py", REPO / "runtime" / "trt.py",
                    REPO / "runtime" / "backends" / "trt_backend.py"]
#: functions that go through polygraphy's loaders (polygraphy owns the TensorRT names it uses)
POLYGRAPHY_FUNCTIONS = {"_build_trt"}


def _used_tensorrt_names() -> set[str]:
    """TensorRT names used by TENSORRT_SOURCES: ``trt.<chain>`` and ``<receiver>.<attr>``."""
    used: set[str] = set()
    for path in TENSORRT_SOURCES:
        tree = ast.parse(path.read_text())
        skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in POLYGRAPHY_FUNCTIONS
                for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or id(node) in skip:
                continue
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            root = ast.unparse(base)
            if root in ("trt", "self._trt"):
                while chain and chain[-1].startswith("__") and chain[-1] != "__version__":
                    chain.pop()  # ILogger.__init__: the class itself is what counts
                used.add(".".join(chain))
            elif isinstance(node.value, (ast.Name, ast.Attribute)) and ast.unparse(node.value) in RECEIVERS:
                used.add(f"{RECEIVERS[ast.unparse(node.value)]}.{node.attr}")
    used |= {f"MemoryPoolType.{pool}" for pool in rb.MEMORY_POOLS.values()}  # getattr(trt.MemoryPoolType, ...)
    return {u for u in used if u}


def test_the_name_table_is_what_the_code_uses():
    """runtime.trt.TENSORRT_API lists every name used (so the test above checks them all) and no other."""
    table = set(rtrt.TENSORRT_API["runtime"]) | set(rtrt.TENSORRT_API["builder"])
    used = _used_tensorrt_names()
    prefixes = {".".join(n.split(".")[:i]) for n in table for i in range(1, n.count(".") + 1)}
    assert used - table - prefixes == set(), "used but not in runtime.trt.TENSORRT_API"
    assert table - used == set(), "in runtime.trt.TENSORRT_API but not used"
    assert set(rtrt.FULL_TENSORRT_ONLY) <= table


def test_polygraphy_loaders_take_what_the_trt_build_passes():
    """--target trt builds through polygraphy (no full TensorRT here to run it): every keyword that
    runtime/build.py passes to a polygraphy loader is one the installed polygraphy (>= 0.50.3) takes."""
    import inspect

    from polygraphy.backend import trt as poly_trt
    tree = ast.parse((REPO / "runtime" / "build.py").read_text())
    build_trt = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_build_trt")
    calls = [c for c in ast.walk(build_trt) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
             and hasattr(poly_trt, c.func.id)]
    assert {c.func.id for c in calls} >= {"CreateConfig", "NetworkFromOnnxBytes", "EngineBytesFromNetwork"}
    for call in calls:
        accepted = set()  # a loader's **kwargs go to its base class (CreateConfig -> _CreateConfigCommon)
        for cls in getattr(poly_trt, call.func.id).__mro__:
            params = inspect.signature(cls.__init__).parameters
            accepted |= set(params)
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break
        passed = {k.arg for k in call.keywords if k.arg}
        assert passed <= set(accepted), f"{call.func.id} does not take {sorted(passed - set(accepted))}"
