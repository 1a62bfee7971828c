"""The IPluginV3 enqueue harness (plugins/trt/harness/): the srdeploy TensorRT plugins created from
field collections, shaped, configured and enqueued on device buffers as TensorRT does, against
float64 references from models.ops.

On the CPU: the harness compiles (with the plugin library, warnings as errors), checks its case
files, refuses to run without a GPU (exit 3, one line saying where to run it), and its comparison
(PSNR, max |diff|, exact, non-finite, fp16 decoding, floors, JSON) is checked by replaying outputs
saved by this test. On a GPU
(marked gpu): every case meets the DESIGN.md section 5 floors (fp32 >= 100 dB, fp16 >= 60 dB,
BucketSort exact), outputs and workspace poisoned first and never overrun, two enqueues bitwise
equal, BucketAttention under each variant the library selects. Imports only torch, numpy and the
project's modules (the GPU machine has nothing else).
"""

import json
import subprocess

import numpy as np
import pytest
import torch

from plugins import trt
from plugins.trt import harness
from runtime.metrics import psnr_peak1


def harness_binary(lib):
    return lib.parent / trt.HARNESS_NAME


def test_harness_refuses_to_run_without_a_gpu(trt_plugins_lib, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: test_plugins_enqueue_on_gpu runs the harness")
    harness.write_cases(tmp_path, harness.cases(small=True))
    results_file = tmp_path / "results.json"
    proc, results = harness.run(harness_binary(trt_plugins_lib), trt_plugins_lib, tmp_path, json_path=results_file)
    assert proc.returncode == harness.EXIT_NO_GPU, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device") and "gpu_check.sh" in lines[0]
    assert results is None and not results_file.exists()  # nothing run, nothing written


def test_harness_checks_its_case_files_before_the_gpu(trt_plugins_lib, tmp_path):
    binary = harness_binary(trt_plugins_lib)
    proc, _ = harness.run(binary, trt_plugins_lib, tmp_path)  # no manifest
    assert proc.returncode == 2 and "manifest.txt" in proc.stderr and "python -m plugins.trt.harness" in proc.stderr
    selected = harness.cases(small=True)
    manifest = harness.write_cases(tmp_path, selected)
    truncated = tmp_path / f"{selected[1].name}.q.bin"
    truncated.write_bytes(truncated.read_bytes()[:-4])
    proc, _ = harness.run(binary, trt_plugins_lib, tmp_path)
    assert proc.returncode == 2 and truncated.name in proc.stderr and "bytes" in proc.stderr, proc.stderr
    harness.write_cases(tmp_path, selected)
    manifest.write_text(manifest.read_text().replace("op CrossScaleFold", "op CrossScaleFolds"))
    proc, _ = harness.run(binary, trt_plugins_lib, tmp_path)
    assert proc.returncode == 2 and "no creator named CrossScaleFolds" in proc.stderr, proc.stderr


def save_output(directory, case, name, array):
    array.astype(array.dtype.newbyteorder("<"), copy=False).tofile(directory / f"{case.name}.{name}.out")


def test_harness_comparison_by_replay(trt_plugins_lib, tmp_path):
    """The verdicts the GPU run will give, on outputs made here: one exact mismatch, PSNR as numpy
    computes it (fp32, and fp16 with subnormals, zeros of both signs), a NaN, a miss of the floor."""
    selected = {c.name: c for c in harness.cases(small=True)}
    harness.write_cases(tmp_path, list(selected.values()))
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    rng = np.random.default_rng(0)
    sort = selected["sort_small"]
    order = sort.references["order"].numpy().copy()
    order[1, 7] += 1
    save_output(outputs, sort, "order", order)
    save_output(outputs, sort, "rank", sort.references["rank"].numpy())
    attention = selected["attention_small_fp32"]
    ref = attention.references["out"].numpy()
    noisy = (ref + 3e-6 * rng.standard_normal(ref.shape)).astype(np.float32)
    save_output(outputs, attention, "out", noisy)
    fold = selected["fold_small_fp32"]
    with_nan = fold.references["out"].numpy().astype(np.float32)
    with_nan[0, 1, 2, 3] = np.nan
    save_output(outputs, fold, "out", with_nan)
    fold16 = selected["fold_small_fp16"]
    half = fold16.references["out"].numpy().astype(np.float16)
    smallest = np.argsort(np.abs(fold16.references["out"].numpy()), axis=None)[:5]
    half.flat[smallest] = np.array([6e-8, 3e-5, -2e-6, 0.0, -0.0], dtype=np.float16)  # subnormals and zeros
    save_output(outputs, fold16, "out", half)

    results_file = tmp_path / "results.json"
    cmd = [str(harness_binary(trt_plugins_lib)), "--library", str(trt_plugins_lib), "--cases", str(tmp_path),
           "--replay", str(outputs), "--json", str(results_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a case failed
    rows = {r["case"]: r for r in json.loads(results_file.read_text())["cases"]}
    assert rows["sort_small"]["status"] == "FAIL" and rows["sort_small"]["mismatches"] == 1
    a = rows["attention_small_fp32"]
    assert a["status"] == "PASS" and a["psnr_db"] == pytest.approx(psnr_peak1(noisy.astype(np.float64), ref), abs=1e-6)
    assert a["max_abs"] == pytest.approx(np.abs(noisy.astype(np.float64) - ref).max(), rel=1e-9)
    assert 100 < a["psnr_db"] < 120
    f = rows["fold_small_fp32"]
    assert f["status"] == "FAIL" and f["non_finite"] == 1 and "non-finite" in f["message"]
    h = rows["fold_small_fp16"]
    want = psnr_peak1(half.astype(np.float64), fold16.references["out"].numpy())
    assert h["status"] == "PASS" and h["psnr_db"] == pytest.approx(want, abs=1e-6) and 60 < want < 100, (h, want)
    # The same fp32 output below its floor (100 dB) fails as such.
    save_output(outputs, attention, "out", (ref + 1e-4 * rng.standard_normal(ref.shape)).astype(np.float32))
    subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    a = {r["case"]: r for r in json.loads(results_file.read_text())["cases"]}["attention_small_fp32"]
    assert a["status"] == "FAIL" and a["psnr_db"] < 100 and a["message"] == "below the floor"
    assert "CASE attention_small_fp32" in proc.stdout and "FAILED: 2 passed, 2 failed" in proc.stdout


@pytest.mark.gpu
def test_plugins_enqueue_on_gpu(trt_plugins_lib, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (the harness enqueues the plugins on one)")
    selected = harness.cases()
    harness.write_cases(tmp_path / "cases", selected)
    proc, results = harness.run(harness_binary(trt_plugins_lib), trt_plugins_lib, tmp_path / "cases",
                                json_path=tmp_path / "results.json", variants="gather,chunk")
    print(proc.stdout)  # one line per case in the test log
    assert results is not None, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    rows = results["cases"]
    assert not [r for r in rows if r["status"] == "FAIL"], proc.stdout
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    assert set(by_case) == {c.name for c in selected}
    for case in selected:
        ran = [r for r in by_case[case.name] if r["status"] == "PASS"]
        assert ran, f"{case.name}: not run"
        if case.op == "BucketAttention":
            assert {r["variant"] for r in ran} >= {"gather"}
            skipped = [r for r in by_case[case.name] if r["status"] == "SKIP"]
            assert not skipped or not results["variants_honoured"]  # a skip only where the library has no variants
        for r in ran:  # the floors again, here: the harness's own verdict is not the only check
            assert r["deterministic"] and r["non_finite"] == 0
            if case.op == "BucketSort":
                assert r["mismatches"] == 0
            else:
                assert r["psnr_db"] is not None and r["psnr_db"] >= case.floor_db, r
