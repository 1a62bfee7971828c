"""benchmarks.parity and benchmarks.latency end to end on the smallest case (EDSR x2, one size), and
parity's API: a configuration object and the runtime backends (TensorRT through runtime.build)."""
import json

import pytest

from benchmarks import latency, parity
from export.ort import custom_ops_available
from models.errors import UsageError


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-exports")  # exports shared by the tests below


def test_parity_rows_json_and_table(tmp_path, work, capsys):
    out = tmp_path / "out"
    code = parity.main(["--models", "edsr", "--scales", "2", "--sizes", "12x14", "--work-dir", str(work),
                        "--out-dir", str(out)])
    assert code == 0
    result = json.loads((out / "parity.json").read_text())
    assert result["passed"] and result["floors_db"] == {"fp32": 100.0, "fp16": 45.0}
    measured = [r for r in result["rows"] if r["backend"] == "onnxruntime-cpu"]
    modes = ["onnx", "plugin"] if custom_ops_available() else ["onnx"]
    assert {(r["mode"], r["precision"]) for r in measured} == {(m, p) for m in modes for p in ("fp32", "fp16")}
    for r in measured:
        assert r["status"] == "ok" and r["psnr_db"] >= r["floor_db"] and r["input"].startswith(("Set5", "uniform"))
        assert set(r) >= {"psnr_db", "max_abs", "mean_abs"}
    trt = [r for r in result["rows"] if r["backend"] == "tensorrt"]
    assert len(trt) == 4
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert all(r["status"].startswith("not available (the tensorrt Python package is not installed")
                   for r in trt)
    table = (out / "parity.md").read_text()
    assert "| edsr" in table and "PSNR dB" in table and "## Exports" in table
    # existing results are kept unless --overwrite
    with pytest.raises(SystemExit, match="--overwrite"):
        parity.main(["--models", "edsr", "--scales", "2", "--out-dir", str(out)])


def test_parity_exits_non_zero_below_a_floor(tmp_path, work, monkeypatch):
    monkeypatch.setitem(parity.FLOORS, "fp32", 1000.0)  # unreachable: every measured fp32 row must fail
    code = parity.main(["--models", "edsr", "--scales", "2", "--sizes", "12x14", "--modes", "onnx",
                        "--precisions", "fp32", "--backends", "onnxruntime-cpu", "--work-dir", str(work),
                        "--out-dir", str(tmp_path)])
    assert code == 1
    rows = json.loads((tmp_path / "parity.json").read_text())["rows"]
    assert rows and all(r["status"] == "BELOW FLOOR" for r in rows)


def test_parity_rejects_unknown_backend(tmp_path, capsys):
    assert parity.main(["--backends", "tvm", "--out-dir", str(tmp_path)]) == 2
    assert "unknown tvm" in capsys.readouterr().err


def test_latency_json_table_plot_and_profile(tmp_path, work):
    code = latency.main(["--models", "edsr", "--scales", "2", "--sizes", "12x14", "--warmup", "1", "--repeat", "3",
                         "--work-dir", str(work), "--out-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "latency.json").read_text())
    backends = {r["backend"] for r in result["rows"] if r["status"] == "ok"}
    assert {"torch", "ort-onnx"} <= backends
    for r in result["rows"]:
        if r["status"] == "ok":
            assert 0 < r["median_ms"] <= r["p90_ms"] and r["images_per_s"] > 0 and r["peak_mib"] is not None
    assert result["profile"]["ops"] and abs(sum(o["share"] for o in result["profile"]["ops"]) - 1) < 0.5
    assert (tmp_path / "latency.png").stat().st_size > 1000
    assert "What dominates" in (tmp_path / "latency.md").read_text()


def test_parity_api_takes_a_config_and_runs_the_runtime_backends(tmp_path, work, monkeypatch):
    from runtime.backends import OrtBackend
    opened = []
    real_open = OrtBackend._open.__func__
    monkeypatch.setattr(OrtBackend, "_open", classmethod(lambda cls, path, **kw: opened.append(path) or
                                                         real_open(cls, path, **kw)))
    config = parity.ParityConfig(models=("edsr",), scales=(2,), sizes=((12, 14), (13, 9)), modes=("onnx",),
                                 precisions=("fp32",), backends=("onnxruntime-cpu",), work_dir=work)
    rows, extra = parity.run(config)
    assert [(r["size"], r["status"]) for r in rows] == [("12x14", "ok"), ("13x9", "ok")]
    assert all(r["psnr_db"] >= 100 for r in rows) and extra["exports"][0]["mode"] == "onnx"
    assert opened == [work / "edsr_x2_onnx_fp32.onnx"]  # runtime.infer's backend, opened once for both sizes
    with pytest.raises(UsageError, match="--backends: unknown tvm; choose from onnxruntime-cpu"):
        parity.ParityConfig(backends=("tvm",)).check()


def test_parity_runs_tensorrt_through_runtime_build_and_the_trt_backend(tmp_path, monkeypatch):
    """No TensorRT here: runtime.build is replaced by one that writes an engine file and a real sidecar
    (an RTX one: TensorRT-RTX is installed here, a GPU is not); parity must then open that engine with
    TrtBackend, which reads the sidecar and refuses in one line (the row's status)."""
    from runtime import build as rb
    from runtime import trt as rtrt
    from test_trt import make_rtx_sidecar

    onnx_path = tmp_path / "edsr_x2_onnx_fp32.onnx"
    onnx_path.write_bytes(b"onnx")
    builds = []

    def fake_plan(onnx, engine, *, min_shapes, opt_shapes, max_shapes, force):
        builds.append((onnx, engine, min_shapes, opt_shapes, max_shapes, force))
        return engine

    def fake_build(engine):  # the plan above is the engine path
        engine.write_bytes(b"engine")
        rtrt.write_sidecar(make_rtx_sidecar(engine), engine)
    monkeypatch.setattr(rb, "make_plan", fake_plan)
    monkeypatch.setattr(rb, "build", fake_build)
    if rtrt.unavailable_reason("rtx") is None:
        pytest.skip("TensorRT-RTX and a GPU are here: the fake engine would be deserialised")
    opened = parity.Opened([(12, 14), (16, 8)])
    for _ in range(2):  # built once, its refusal kept for the next size
        with pytest.raises(Exception, match=r"engine .*edsr_x2_onnx_fp32.engine \(TensorRT-RTX .*cannot run here"):
            opened("tensorrt", onnx_path)
    assert builds == [(onnx_path, onnx_path.with_suffix(".engine"), "input:1x3x12x8", "input:1x3x16x14",
                       "input:1x3x16x14", True)]
