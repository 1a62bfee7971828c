"""benchmarks.parity and benchmarks.latency end to end on the smallest case (EDSR x2, one size)."""
import json

import pytest

from benchmarks import latency, parity
from export.ort import custom_ops_available


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
