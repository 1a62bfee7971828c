"""python -m runtime.build and its API (make_plan / build): flags or Python values -> build plan (shapes,
pools, plugins, --force), refusals, the rebuild command, the ONNX copy handed to TensorRT's parser, --dry-run
and --help without TensorRT; a real TensorRT-RTX build (CPU) for what build() writes and refuses."""
import json
import os
import subprocess
import sys
import textwrap

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO
from runtime import build as rb
from runtime import trt as rtrt

META = {"model": "csnln", "scale": 2, "rgb_range": 255, "size_multiple": 2, "min_pixels": 16, "precision": "fp32"}


def make_onnx(path, *, custom=False, static=False, meta=META, elem=TensorProto.FLOAT):
    dims = [1, 3, 32, 32] if static else ["batch", 3, "height", "width"]
    inp = helper.make_tensor_value_info("input", elem, dims)
    out = helper.make_tensor_value_info("output", elem, None)
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu")]
    if custom:
        nodes.append(helper.make_node("CrossScaleFold", ["r", "r"], ["output"], domain="srdeploy", stride=2,
                                      padding=1, name="fold"))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["output"]))
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("srdeploy", 1)] if custom else [])
    model = helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=opsets)
    if meta:
        model.metadata_props.append(onnx.StringStringEntryProto(key="srdeploy", value=json.dumps(meta)))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def plain(tmp_path):
    return make_onnx(tmp_path / "m.onnx")


@pytest.fixture
def custom(tmp_path):
    return make_onnx(tmp_path / "c.onnx", custom=True)


def plan(*argv):
    return rb.plan_from_args(rb.build_parser().parse_args(list(argv)))


SHAPES = ["--minShapes", "input:1x3x16x16", "--optShapes", "input:1x3x64x64", "--maxShapes", "input:1x3x128x128"]


# ------------------------------------------------------------------------------- parsing

def test_parse_shapes_trtexec_syntax():
    assert rb.parse_shapes("input:1x3x64x64") == {"input": (1, 3, 64, 64)}
    assert rb.parse_shapes("a:1x2,b:3") == {"a": (1, 2), "b": (3,)}
    assert rb.parse_shapes("'in:0':1x3") == {"in:0": (1, 3)}  # quoted names may hold ':'


@pytest.mark.parametrize("text,match", [
    ("input", "expected name:DxDx"),
    ("input:1x3x", "positive whole numbers"),
    ("input:1x0x4", "> 0"),
    ("input:1x-3", "positive whole numbers"),
    (":1x3", "name is empty"),
    ("a:1,a:2", "given twice"),
    ("", "no shapes"),
])
def test_parse_shapes_rejects(text, match):
    with pytest.raises(rb.UsageError, match=match):
        rb.parse_shapes(text)


def test_parse_mem_pool():
    assert rb.parse_mem_pool("workspace:1024") == {"workspace": 1024 << 20}
    assert rb.parse_mem_pool("workspace:2G,tacticSharedMem:48K") == {"workspace": 2 << 30, "tacticSharedMem": 48 << 10}
    assert rb.parse_mem_pool("workspace:1.5M") == {"workspace": 3 << 19}
    with pytest.raises(rb.UsageError, match="unknown pool"):
        rb.parse_mem_pool("vram:10")
    with pytest.raises(rb.UsageError, match="pool:size"):
        rb.parse_mem_pool("workspace:lots")


# ---------------------------------------------------------------------------------- plan

def test_plan_from_flags(plain, tmp_path):
    p = plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "m.engine"), *SHAPES, "--timingCacheFile",
             str(tmp_path / "tc"), "--builderOptimizationLevel", "5", "--memPoolSize", "workspace:512", "--verbose")
    assert p.profile == {"input": {"min": [1, 3, 16, 16], "opt": [1, 3, 64, 64], "max": [1, 3, 128, 128]}}
    assert p.precision == "fp32" and p.model == META and p.custom_ops == [] and p.plugin_library is None
    assert p.mem_pool == {"workspace": 512 << 20} and p.builder_optimization_level == 5 and p.verbose
    assert p.onnx_sha256 == rtrt.sha256_file(plain)
    # The rebuild command parses back into the same plan.
    argv = p.command().split()[3:]
    assert plan(*argv).to_dict() == {**p.to_dict(), "verbose": False}


def test_opt_alone_fixes_the_profile(plain, tmp_path):
    p = plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), "--optShapes", "input:1x3x64x64")
    assert p.profile["input"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}


def test_static_inputs_need_no_shapes(tmp_path):
    static = make_onnx(tmp_path / "s.onnx", static=True)
    assert plan("--onnx", str(static), "--saveEngine", str(tmp_path / "e")).profile == {}


def test_fp16_precision_from_the_file(tmp_path):
    f = make_onnx(tmp_path / "h.onnx", meta=None, elem=TensorProto.FLOAT16)
    assert plan("--onnx", str(f), "--saveEngine", str(tmp_path / "e"), "--optShapes", "input:1x3x8x8").precision == "fp16"


@pytest.mark.parametrize("flags,match", [
    ([], "dynamic shape .* give --minShapes/--optShapes/--maxShapes input:"),
    (["--minShapes", "input:1x3x16x16"], "need --optShapes"),
    (["--optShapes", "image:1x3x64x64"], "has no input 'image'; inputs: input"),
    (["--optShapes", "input:1x3x64"], "rank 3, the input has rank 4"),
    (["--optShapes", "input:1x4x64x64"], "axis 1 is fixed to 3"),
    (["--minShapes", "input:1x3x96x96", "--optShapes", "input:1x3x64x64"], "min <= opt <= max"),
    (["--optShapes", "input:1x3x64x64", "--maxShapes", "input:1x3x32x128"], "min <= opt <= max"),
    (["--optShapes", "input:1x3x63x64"], "multiples of 2"),
    (["--optShapes", "input:1x3x2x4"], "H·W >= 16"),
    (["--optShapes", "input:1x3x64x64", "--builderOptimizationLevel", "9"], "0..5"),
    (["--optShapes", "input:1x3x64x64", "--dynamicPlugins", "/nowhere/lib.so"], "no such file"),
])
def test_plan_refusals(plain, tmp_path, flags, match):
    with pytest.raises(rb.UsageError, match=match):
        plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *flags)


def test_missing_onnx_and_not_onnx(tmp_path):
    with pytest.raises(rb.UsageError, match="no such file; export one"):
        plan("--onnx", str(tmp_path / "none.onnx"), "--saveEngine", str(tmp_path / "e"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(rb.UsageError, match="not a readable ONNX file"):
        plan("--onnx", str(bad), "--saveEngine", str(tmp_path / "e"))


def test_existing_engine_needs_force(plain, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"old")
    with pytest.raises(rb.UsageError, match="exists; pass --force"):
        plan("--onnx", str(plain), "--saveEngine", str(engine), *SHAPES)
    assert plan("--onnx", str(plain), "--saveEngine", str(engine), *SHAPES, "--force").force
    assert engine.read_bytes() == b"old"  # planning never writes
    with pytest.raises(rb.UsageError, match="overwrite the ONNX"):
        plan("--onnx", str(plain), "--saveEngine", str(plain), *SHAPES, "--force")


# ------------------------------------------------------------------------------- plugins

def test_custom_ops_find_the_plugin_library(custom, tmp_path, monkeypatch):
    lib = tmp_path / rtrt.PLUGIN_LIB_NAME
    lib.write_bytes(b"\x7fELF fake")
    monkeypatch.setenv(rtrt.PLUGIN_LIB_ENV, str(lib))
    p = plan("--onnx", str(custom), "--saveEngine", str(tmp_path / "e"), *SHAPES)
    assert p.custom_ops == ["srdeploy::CrossScaleFold"] and p.plugin_library == lib.resolve()
    assert "--dynamicPlugins" in p.command()
    machine = rtrt.MachineInfo("11.1.0", "NVIDIA H100", "9.0")
    side = rb.sidecar_for(p, machine, "ab" * 32)
    assert side.plugin_sha256 == rtrt.sha256_file(lib) and side.custom_ops == ["srdeploy::CrossScaleFold"]
    assert side.shapes == p.profile and side.model == META and side.rebuild_command == p.command()


def test_custom_ops_without_plugin_library(custom, tmp_path, monkeypatch):
    monkeypatch.setenv(rtrt.PLUGIN_LIB_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(rb.UsageError, match="CrossScaleFold: srdeploy TensorRT plugin library not found .*"
                                            "python -m plugins.build --tensorrt-root.*--ops onnx"):
        plan("--onnx", str(custom), "--saveEngine", str(tmp_path / "e"), *SHAPES)


def test_onnx_copy_for_the_tensorrt_parser(custom):
    model = onnx.load(str(custom))
    assert rb.prepare_onnx_for_tensorrt(model) == 1
    fold = next(n for n in model.graph.node if n.op_type == "CrossScaleFold")
    attrs = {a.name: helper.get_attribute_value(a) for a in fold.attribute}
    assert attrs == {"stride": 2, "padding": 1, "plugin_namespace": b"srdeploy", "plugin_version": b"1"}
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert not relu.attribute
    assert rb.prepare_onnx_for_tensorrt(model) == 1  # idempotent: attributes not duplicated
    assert len(fold.attribute) == 4
    assert len(onnx.load(str(custom)).graph.node[1].attribute) == 2  # the file is untouched
    data = rb.onnx_bytes_for_tensorrt(custom)
    assert b"plugin_namespace" in data


# ----------------------------------------------------------------------------------- CLI

def test_dry_run_prints_the_plan(plain, tmp_path, capsys):
    assert rb.main(["--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES, "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"]["input"]["max"] == [1, 3, 128, 128] and out["command"].startswith("python -m runtime.build")
    assert not (tmp_path / "e").exists()


def test_cli_errors_are_one_line(plain, tmp_path, capsys):
    assert rb.main(["--onnx", str(plain), "--saveEngine", str(tmp_path / "e")]) == rb.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m runtime.build: error: input 'input' has dynamic shape")


def test_cli_without_tensorrt(plain, tmp_path, capsys):
    pytest.importorskip("polygraphy")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed: this checks the message given without it")
    except ImportError:
        pass
    assert rb.main(["--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES]) == rb.EXIT_USAGE
    assert "tensorrt Python package is not installed" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not rtrt.sidecar_path(tmp_path / "e").exists()


def test_help_lists_the_trtexec_flags(capsys):
    with pytest.raises(SystemExit):
        rb.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--onnx", "--saveEngine", "--dynamicPlugins", "--minShapes", "--optShapes", "--maxShapes",
                 "--timingCacheFile", "--builderOptimizationLevel", "--memPoolSize", "--verbose", "--force"):
        assert flag in text


def test_build_function_checks_like_the_cli(plain, tmp_path):
    with pytest.raises(rb.UsageError, match="dynamic shape"):
        rb.make_plan(plain, tmp_path / "e")
    if rtrt.unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: building is tested elsewhere")
    with pytest.raises(rtrt.TensorRTUnavailable):
        rb.build(rb.make_plan(plain, tmp_path / "e", opt_shapes="input:1x3x64x64"))
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------------- API

def test_make_plan_is_what_the_cli_plans(plain, tmp_path):
    """The CLI is make_plan on its flags: Python values and trtexec text give the same plan."""
    engine, tc = tmp_path / "m.engine", tmp_path / "tc"
    cli = plan("--onnx", str(plain), "--saveEngine", str(engine), *SHAPES, "--timingCacheFile", str(tc),
               "--builderOptimizationLevel", "2", "--memPoolSize", "workspace:512,tacticSharedMem:48K", "--noTF32",
               "--saveOnnx", str(tmp_path / "p.onnx"))
    api = rb.make_plan(plain, engine, min_shapes={"input": (1, 3, 16, 16)}, opt_shapes={"input": [1, 3, 64, 64]},
                       max_shapes="input:1x3x128x128", timing_cache=tc, builder_optimization_level=2,
                       mem_pool={"workspace": 512 << 20, "tacticSharedMem": 48 << 10}, tf32=False,
                       save_onnx=tmp_path / "p.onnx")
    assert api == cli and api.command() == cli.command()
    rtx = rb.make_plan(plain, engine, opt_shapes={"input": (1, 3, 64, 64)}, target="rtx",
                       compute_capabilities=["8.6", "8.9"])
    assert rtx.compute_capabilities == "8.6,8.9" and rtx.command().endswith("--computeCapabilities 8.6,8.9")


def test_save_onnx_never_replaces_a_file_silently(plain, tmp_path):
    engine, copy = tmp_path / "m.engine", tmp_path / "copy.onnx"
    copy.write_bytes(b"mine")
    with pytest.raises(rb.UsageError, match="--saveOnnx .*copy.onnx exists; pass --force"):
        rb.make_plan(plain, engine, opt_shapes={"input": (1, 3, 64, 64)}, save_onnx=copy)
    with pytest.raises(rb.UsageError, match="would overwrite the ONNX file"):
        rb.make_plan(plain, engine, opt_shapes={"input": (1, 3, 64, 64)}, save_onnx=plain, force=True)
    assert copy.read_bytes() == b"mine"
    assert rb.make_plan(plain, engine, opt_shapes={"input": (1, 3, 64, 64)}, save_onnx=copy, force=True).save_onnx == copy


@pytest.mark.parametrize("kwargs,match", [
    (dict(opt_shapes={"input": (1, 3, 0, 64)}), r"--optShapes input: every dimension must be a whole number > 0"),
    (dict(opt_shapes={"input": (1, 3, 64.0, 64)}), "whole number > 0"),
    (dict(opt_shapes={"input": ()}), "whole number > 0"),
    (dict(opt_shapes={"input": (1, 3, 64, 64)}, mem_pool={"vram": 1}), "unknown pool 'vram'"),
    (dict(opt_shapes={"input": (1, 3, 64, 64)}, mem_pool={"workspace": -1}), "whole number of bytes"),
    (dict(opt_shapes={"input": (1, 3, 64, 64)}, target="cpu"), "target 'cpu': one of trt, rtx"),
    (dict(opt_shapes={"input": (1, 3, 64, 64)}, compute_capabilities=["8.6"]), "goes with --target rtx"),
])
def test_make_plan_refuses_bad_python_values(plain, tmp_path, kwargs, match):
    with pytest.raises(rb.UsageError, match=match):
        rb.make_plan(plain, tmp_path / "e", **kwargs)


def _fresh_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """TensorRT in its own interpreter: a parser abort fails the test instead of killing the run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_build_writes_engine_and_sidecar_and_never_replaces_one_that_appeared(plain, tmp_path):
    """make_plan + build with TensorRT-RTX (ahead of time, on the CPU): the BuildResult names what was
    written; an engine that appears between plan and build is kept and the build refused."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 not installed (pip install -e '.[dev]')")
    proc = _fresh_python("""
        import json, sys
        from pathlib import Path
        from runtime.build import build, make_plan, UsageError
        onnx, engine, late = sys.argv[1:]
        r = build(make_plan(onnx, engine, opt_shapes={"input": (1, 3, 16, 16)}, target="rtx",
                            compute_capabilities=["8.6"]))
        print(json.dumps({"engine": str(r.engine), "sidecar": str(r.sidecar_path), "seconds": r.seconds,
                          "sha": r.sidecar.engine_sha256, "cc": r.sidecar.compute_capabilities}))
        plan = make_plan(onnx, late, opt_shapes="input:1x3x16x16", target="rtx")
        Path(late).write_bytes(b"mine")  # appears while building
        try:
            build(plan)
        except UsageError as e:
            print(e)
    """, str(plain), str(tmp_path / "a.engine"), str(tmp_path / "late.engine"))
    assert proc.returncode == 0, proc.stderr
    result, refusal = proc.stdout.strip().splitlines()[-2:]
    result = json.loads(result)
    engine = tmp_path / "a.engine"
    assert result["engine"] == str(engine) and result["sidecar"] == str(rtrt.sidecar_path(engine))
    side = rtrt.read_sidecar(engine)
    assert result["sha"] == side.engine_sha256 == rtrt.sha256_file(engine) and result["cc"] == ["8.6"]
    assert result["seconds"] > 0 and side.target == "rtx" and side.shapes["input"]["opt"] == [1, 3, 16, 16]
    assert refusal == f"engine {tmp_path / 'late.engine'} appeared during the build; pass --force to replace it"
    assert (tmp_path / "late.engine").read_bytes() == b"mine"
    assert not rtrt.sidecar_path(tmp_path / "late.engine").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.engine", "a.engine.json", "late.engine", "m.onnx"]


def test_cli_says_a_rejected_graph_in_one_line_with_exit_1(tmp_path):
    """BuildFailed (TensorRT-RTX's parser rejects the graph): exit status 1, the CLI's last line says why."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 not installed (pip install -e '.[dev]')")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["input"], ["r"]), helper.make_node("Unique", ["r"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "u.onnx"))
    engine = tmp_path / "u.engine"
    proc = _fresh_python("import sys; from runtime.build import main; sys.exit(main(sys.argv[1:]))", "--target", "rtx",
                         "--onnx", str(tmp_path / "u.onnx"), "--saveEngine", str(engine), "--optShapes",
                         "input:1x3x16x16")
    assert proc.returncode == rb.EXIT_BUILD, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"python -m runtime.build: error: the build failed: TensorRT-RTX's ONNX parser rejected {tmp_path / 'u.onnx'}: ")
    assert "Unique" in proc.stderr and not engine.exists() and not rtrt.sidecar_path(engine).exists()


# ------------------------------------------------------------------------ TF32, --target rtx

def test_tf32_is_on_by_default_and_recorded(plain, tmp_path):
    machine = rtrt.MachineInfo("11.1.0", "NVIDIA H100", "9.0")
    p = plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES)
    assert p.tf32 and "--noTF32" not in p.command() and p.target == "trt"
    assert rb.sidecar_for(p, machine, "0" * 64).build_options["tf32"] is True
    off = plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES, "--noTF32")
    assert not off.tf32 and off.command().endswith("--noTF32")
    assert rb.sidecar_for(off, machine, "0" * 64).build_options["tf32"] is False
    assert plan(*off.command().split()[3:]).to_dict() == off.to_dict()  # the rebuild command keeps it


def test_rtx_plan_and_its_rebuild_command(plain, tmp_path):
    p = plan("--target", "rtx", "--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES,
             "--computeCapabilities", "8.6,8.9")
    assert p.target == "rtx" and p.compute_capabilities == "8.6,8.9" and p.plugin_library is None
    assert p.command().startswith("python -m runtime.build --target rtx --onnx ")
    assert plan(*p.command().split()[3:]).to_dict() == p.to_dict()
    side = rb.sidecar_for(p, rtrt.MachineInfo("1.7.1.116", "", ""), "0" * 64, compute_capabilities=["8.6", "8.9"])
    assert side.target == "rtx" and side.compute_capabilities == ["8.6", "8.9"]
    assert side.describe() == "TensorRT-RTX 1.7.1.116, compute capability 8.6, 8.9"


@pytest.mark.parametrize("flags,match", [
    (["--target", "rtx", "--timingCacheFile", "tc"], "--target rtx: --timingCacheFile is not supported"),
    (["--target", "rtx", "--computeCapabilities", "sm86"], "expected major.minor"),
    (["--computeCapabilities", "8.6"], "--computeCapabilities goes with --target rtx"),
    (["--target", "rtx", "--dynamicPlugins", "/nowhere/lib.so"], "--target rtx: --dynamicPlugins is not supported"),
])
def test_rtx_refusals(plain, tmp_path, flags, match):
    with pytest.raises(rb.UsageError, match=match):
        plan("--onnx", str(plain), "--saveEngine", str(tmp_path / "e"), *SHAPES, *flags)


def test_rtx_refuses_plugin_graphs_in_one_line(custom, tmp_path, capsys, monkeypatch):
    lib = tmp_path / rtrt.PLUGIN_LIB_NAME
    lib.write_bytes(b"\x7fELF fake")
    monkeypatch.setenv(rtrt.PLUGIN_LIB_ENV, str(lib))  # a library is there: still refused (RTX has no plugins)
    argv = ["--target", "rtx", "--onnx", str(custom), "--saveEngine", str(tmp_path / "e"), *SHAPES]
    assert rb.main(argv) == rb.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m runtime.build: error: --target rtx: {custom} holds srdeploy::CrossScaleFold, which "
                   "TensorRT-RTX cannot build (no srdeploy plugins there); export with --ops onnx or use --target trt"]
    assert not (tmp_path / "e").exists()


def test_rtx_compute_capabilities_from_the_real_enum():
    trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 not installed (pip install -e '.[dev]')")
    default = rb.rtx_compute_capabilities(trt_rtx)
    assert "7.5" not in default and {"8.0", "8.6", "8.9", "12.0"} <= set(default)
    assert rb.rtx_compute_capabilities(trt_rtx, "8.6, 7.5,8.6") == ["8.6", "7.5"]
    with pytest.raises(rb.UsageError, match=r"--computeCapabilities '9\.0': TensorRT-RTX .* builds for 7\.5, 8\.0"):
        rb.rtx_compute_capabilities(trt_rtx, "9.0")
