"""runtime.trt without TensorRT: sidecar write/read/verify and its refusal messages, plugin-library
discovery; TrtBackend's tile sizing to an engine's profile and its open path up to the refusal
(running an engine needs TensorRT and a GPU: tests/test_tensorrt_real.py and the GPU check)."""
import json

import pytest

from runtime import trt as rtrt
from runtime.backends import BackendError, TrtBackend
from runtime.backends.trt_backend import fit_to_profile, tile_for_profile

H100 = rtrt.MachineInfo("11.1.0", "NVIDIA H100 80GB HBM3", "9.0")
REBUILD = ("python -m runtime.build --onnx nlsn_x2.onnx --saveEngine nlsn_x2.engine --minShapes input:1x3x48x48 "
           "--optShapes input:1x3x128x128 --maxShapes input:1x3x256x256")


@pytest.fixture
def plugin_lib(tmp_path):
    lib = tmp_path / rtrt.PLUGIN_LIB_NAME
    lib.write_bytes(b"\x7fELF plugins v1")
    return lib


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "nlsn_x2.engine"
    path.write_bytes(b"serialized engine")
    return path


def make_sidecar(engine, plugin_lib=None, machine=H100):
    return rtrt.EngineSidecar(
        engine=engine.name, engine_sha256=rtrt.sha256_file(engine), tensorrt_version=machine.tensorrt_version,
        gpu_name=machine.gpu_name, compute_capability=machine.compute_capability, onnx="nlsn_x2.onnx",
        onnx_sha256="0" * 64, shapes={"input": {"min": [1, 3, 48, 48], "opt": [1, 3, 128, 128], "max": [1, 3, 256, 256]}},
        precision="fp16", plugin_library=str(plugin_lib) if plugin_lib else None,
        plugin_sha256=rtrt.sha256_file(plugin_lib) if plugin_lib else None,
        custom_ops=["srdeploy::BucketAttention", "srdeploy::BucketSort"] if plugin_lib else [],
        model={"model": "nlsn", "scale": 2, "rgb_range": 255, "size_multiple": 1, "min_pixels": 144},
        rebuild_command=REBUILD)


# ---------------------------------------------------------------------------------- sidecar

def test_sidecar_round_trip(engine, plugin_lib):
    side = make_sidecar(engine, plugin_lib)
    path = rtrt.write_sidecar(side, engine)
    assert path == engine.with_name("nlsn_x2.engine.json") and side.created
    data = json.loads(path.read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "plugin_sha256", "onnx_sha256", "shapes",
                "precision", "engine_sha256", "rebuild_command"):
        assert key in data
    assert rtrt.read_sidecar(engine) == side
    assert not list(engine.parent.glob("*.tmp"))  # atomic write leaves nothing behind


def test_sidecar_missing_or_broken(engine):
    with pytest.raises(rtrt.SidecarError, match="has no sidecar.*python -m runtime.build"):
        rtrt.read_sidecar(engine)
    rtrt.sidecar_path(engine).write_text("{not json")
    with pytest.raises(rtrt.SidecarError, match="unreadable sidecar"):
        rtrt.read_sidecar(engine)
    rtrt.sidecar_path(engine).write_text(json.dumps({"engine": "x"}))
    with pytest.raises(rtrt.SidecarError, match="sidecar lacks .*tensorrt_version"):
        rtrt.read_sidecar(engine)
    rtrt.sidecar_path(engine).write_text("[]")
    with pytest.raises(rtrt.SidecarError, match="JSON object"):
        rtrt.read_sidecar(engine)


def test_verify_accepts_the_machine_it_was_built_on(engine, plugin_lib):
    rtrt.verify_sidecar(make_sidecar(engine, plugin_lib), H100, plugin_lib, engine=engine)
    rtrt.verify_sidecar(make_sidecar(engine), H100, None, engine=engine)  # no custom ops: no library needed


@pytest.mark.parametrize("machine,expected", [
    (rtrt.MachineInfo("11.1.0", "NVIDIA A100-SXM4-80GB", "8.0"),
     "built for NVIDIA H100 80GB HBM3 (sm_90) with TensorRT 11.1.0, this machine has NVIDIA A100-SXM4-80GB (sm_80) "
     "with TensorRT 11.1.0 (different compute capability)"),
    (rtrt.MachineInfo("11.0.0", "NVIDIA H100 80GB HBM3", "9.0"),
     "this machine has NVIDIA H100 80GB HBM3 (sm_90) with TensorRT 11.0.0 (different TensorRT version)"),
    (rtrt.MachineInfo("11.1.0", "NVIDIA H100 PCIe", "9.0"), "(different GPU model)"),
    (rtrt.MachineInfo("10.16.1", "NVIDIA L4", "8.9"), "(different TensorRT version and compute capability)"),
])
def test_verify_refuses_another_machine(engine, plugin_lib, machine, expected):
    with pytest.raises(rtrt.EngineMismatch) as e:
        rtrt.verify_sidecar(make_sidecar(engine, plugin_lib), machine, plugin_lib, engine=engine)
    msg = str(e.value)
    assert msg.startswith(f"engine {engine} cannot run here: ") and expected in msg
    assert msg.endswith(f"rebuild with {REBUILD} --force")


def test_verify_refuses_another_plugin_library(engine, plugin_lib, tmp_path):
    side = make_sidecar(engine, plugin_lib)
    other = tmp_path / "other.so"
    other.write_bytes(b"\x7fELF plugins v2")
    with pytest.raises(rtrt.EngineMismatch, match=r"plugin library .*other\.so \(sha256 [0-9a-f]{12}…\) is not the one "
                                                  r"it was built with .*rebuild with python -m runtime.build"):
        rtrt.verify_sidecar(side, H100, other, engine=engine)
    with pytest.raises(rtrt.EngineMismatch, match="needs the srdeploy plugin library .*BucketAttention.*none was found"):
        rtrt.verify_sidecar(side, H100, None, engine=engine)


def test_verify_names_every_difference_and_the_engine_file(engine, plugin_lib, tmp_path):
    side = make_sidecar(engine, plugin_lib)
    engine.write_bytes(b"another engine")
    other = tmp_path / "other.so"
    other.write_bytes(b"x")
    with pytest.raises(rtrt.EngineMismatch) as e:
        rtrt.verify_sidecar(side, rtrt.MachineInfo("11.1.0", "NVIDIA A100", "8.0"), other, engine=engine)
    msg = str(e.value)
    assert "different compute capability" in msg and "other.so" in msg and "sha256 differs" in msg


def test_rebuild_hint_without_a_recorded_command(engine):
    side = make_sidecar(engine)
    side.rebuild_command = ""
    with pytest.raises(rtrt.EngineMismatch, match=f"rebuild with python -m runtime.build --onnx nlsn_x2.onnx "
                                                  f"--saveEngine {engine} --force$"):
        rtrt.verify_sidecar(side, rtrt.MachineInfo("9.0.0", "x", "7.5"), None, engine=engine)


# ------------------------------------------------------------------------- plugin library

def test_plugin_library_discovery(tmp_path, monkeypatch, plugin_lib):
    monkeypatch.delenv(rtrt.PLUGIN_LIB_ENV, raising=False)
    assert rtrt.find_plugin_library(plugin_lib) == plugin_lib.resolve()
    monkeypatch.setenv(rtrt.PLUGIN_LIB_ENV, str(plugin_lib))
    assert rtrt.find_plugin_library() == plugin_lib.resolve()
    missing = tmp_path / "none" / rtrt.PLUGIN_LIB_NAME
    monkeypatch.setenv(rtrt.PLUGIN_LIB_ENV, str(missing))
    with pytest.raises(rtrt.PluginLibraryNotFound, match=r"\$SRDEPLOY_TRT_PLUGINS: .*python -m plugins.build "
                                                         r"--tensorrt-root"):
        rtrt.find_plugin_library()  # the variable is never silently replaced by the default
    assert rtrt.find_plugin_library(required=False) is None
    monkeypatch.delenv(rtrt.PLUGIN_LIB_ENV)
    assert rtrt.default_plugin_library().name == rtrt.PLUGIN_LIB_NAME
    assert rtrt.default_plugin_library().parent.parts[-2:] == ("plugins", "build")
    found = rtrt.find_plugin_library(required=False)
    assert found is None or found == rtrt.default_plugin_library().resolve()


def test_contract_constants():
    from models.ops.contract import DOMAIN, VERSION  # runtime.trt stays light (no torch), so it restates them
    assert (rtrt.PLUGIN_NAMESPACE, rtrt.PLUGIN_VERSION) == (DOMAIN, str(VERSION)) == ("srdeploy", "1")


# ------------------------------------------------------------------------------- profiles

@pytest.mark.parametrize("max_hw,tile,pad,multiple,expected", [
    ((256, 256), 0, 32, 1, (192, 32)),        # whole image -> the largest tile that fits
    ((256, 256), 100, 32, 1, (100, 32)),      # a smaller tile is kept
    ((256, 256), 500, 32, 1, (192, 32)),      # a larger one shrinks
    ((256, 192), 0, 32, 1, (128, 32)),        # the shorter side decides
    ((258, 258), 0, 32, 3, (192, 32)),        # multiples of the up-factor
    ((48, 48), 0, 32, 1, (24, 12)),           # no room: the context shrinks to a quarter of the side
])
def test_tile_for_profile(max_hw, tile, pad, multiple, expected):
    assert tile_for_profile(max_hw, tile, pad, multiple) == expected
    t, p = expected
    assert t + 2 * p <= min(max_hw)


def test_fit_to_profile():
    assert fit_to_profile((20, 30), (48, 48), (256, 256)) == (48, 48)
    assert fit_to_profile((100, 60), (48, 48), (256, 256)) == (100, 60)
    with pytest.raises(ValueError, match="up to 256x256, got 300x60: use --tile"):
        fit_to_profile((300, 60), (48, 48), (256, 256))


def test_atomic_write_replaces(tmp_path):
    from models.files import atomic_write
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


# ------------------------------------------------------------------------------- TensorRT

def test_backend_without_tensorrt_says_so(engine, plugin_lib):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed: this checks the message given without it")
    except ImportError:
        pass
    rtrt.write_sidecar(make_sidecar(engine, plugin_lib), engine)
    with pytest.raises(rtrt.TensorRTUnavailable, match="tensorrt Python package is not installed"):
        TrtBackend(engine)


def test_backend_open_maps_errors_to_backend_error(tmp_path):
    with pytest.raises(BackendError, match="not found; build one with python -m runtime.build"):
        TrtBackend.open(tmp_path / "none.engine")


def test_backend_open_refuses_in_one_line_before_tensorrt_runs(engine):
    # the sidecar's copy of the ONNX metadata must say what the network is (the rule of ExportedBackend)
    side = make_sidecar(engine)
    side.model = {"model": "nlsn", "scale": 2}
    rtrt.write_sidecar(side, engine)
    with pytest.raises(BackendError, match=r"nlsn_x2.engine: the srdeploy metadata lacks rgb_range; build it from a "
                                           r"file exported with python -m export.onnx"):
        TrtBackend.open(engine)
    # an RTX engine: TensorRT-RTX is imported from the sidecar's target, then the missing GPU (or the
    # missing package) is the one line, with what the engine was built for
    rtrt.write_sidecar(make_rtx_sidecar(engine), engine)
    if rtrt.unavailable_reason("rtx") is None:
        pytest.skip("TensorRT-RTX and a GPU are here: the engine would be deserialised (tests/test_tensorrt_real.py)")
    with pytest.raises(BackendError) as e:
        TrtBackend.open(engine, model="nlsn", scale=2)
    msg = str(e.value)
    assert msg.startswith(f"engine {engine} (TensorRT-RTX 1.7.1.116, compute capability 8.0, 8.6, 8.9, 12.0) "
                          f"cannot run here: ") and "\n" not in msg
    assert "torch sees none" in msg or "tensorrt_rtx Python package is not installed" in msg


# ------------------------------------------------------------------------------ RTX target

def make_rtx_sidecar(engine):
    side = make_sidecar(engine)
    side.target, side.tensorrt_version, side.gpu_name, side.compute_capability = "rtx", "1.7.1.116", "", ""
    side.compute_capabilities = ["8.0", "8.6", "8.9", "12.0"]
    return side


def test_rtx_sidecar_round_trip_and_old_sidecars_read_as_trt(engine):
    side = make_rtx_sidecar(engine)
    rtrt.write_sidecar(side, engine)
    assert rtrt.read_sidecar(engine) == side
    data = json.loads(rtrt.sidecar_path(engine).read_text())
    assert data["target"] == "rtx" and data["compute_capabilities"] == ["8.0", "8.6", "8.9", "12.0"]
    del data["target"], data["compute_capabilities"]  # a sidecar written before the RTX target
    rtrt.sidecar_path(engine).write_text(json.dumps(data))
    old = rtrt.read_sidecar(engine)
    assert old.target == "trt" and old.compute_capabilities == []


def test_rtx_engine_runs_on_any_listed_compute_capability(engine):
    side = make_rtx_sidecar(engine)
    for gpu, cc in (("NVIDIA GeForce RTX 4090", "8.9"), ("NVIDIA RTX A6000", "8.6"), ("NVIDIA A100", "8.0")):
        rtrt.verify_sidecar(side, rtrt.MachineInfo("1.7.1.116", gpu, cc), None, engine=engine)


@pytest.mark.parametrize("machine,expected", [
    (rtrt.MachineInfo("1.7.1.116", "NVIDIA H200", "9.0"),
     "it runs on compute capability 8.0, 8.6, 8.9, 12.0, this GPU (NVIDIA H200) is 9.0"),
    (rtrt.MachineInfo("1.6.1.120", "NVIDIA GeForce RTX 4090", "8.9"),
     "built with TensorRT-RTX 1.7.1.116, this machine has TensorRT-RTX 1.6.1.120"),
])
def test_rtx_engine_refused_where_it_cannot_run(engine, machine, expected):
    with pytest.raises(rtrt.EngineMismatch) as e:
        rtrt.verify_sidecar(make_rtx_sidecar(engine), machine, None, engine=engine)
    assert expected in str(e.value) and str(e.value).endswith(f"rebuild with {REBUILD} --force")


def test_unknown_target_in_a_sidecar(engine):
    side = make_sidecar(engine)
    side.target = "tensorrt-llm"
    rtrt.write_sidecar(side, engine)
    with pytest.raises(rtrt.SidecarError, match="unknown target 'tensorrt-llm' \\(known: trt, rtx\\)"):
        TrtBackend(engine)


def test_targets_name_their_packages():
    assert {t: rtrt.TARGETS[t].module for t in rtrt.TARGETS} == {"trt": "tensorrt", "rtx": "tensorrt_rtx"}
