"""The IPluginV3 enqueue harness (plugins/trt/harness/): the srdeploy TensorRT plugins created from
field collections, shaped, configured and enqueued on device buffers as TensorRT does, against
float64 references from models/ops.py.

On the CPU: the harness compiles (with the plugin library, warnings as errors), checks its case
files and refuses to run without a GPU (exit 3, one line saying where to run it). On a GPU
(marked gpu): every case meets the DESIGN.md section 5 floors (fp32 >= 100 dB, fp16 >= 60 dB,
BucketSort exact), outputs and workspace poisoned first and never overrun, two enqueues bitwise
equal, BucketAttention under each variant the library selects. Imports only torch, numpy and the
project's modules (the GPU machine has nothing else).
"""

import pytest
import torch

from plugins import trt
from plugins.trt import harness


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
