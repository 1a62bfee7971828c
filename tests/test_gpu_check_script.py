"""CPU checks of the GPU check's parts: the benchmark's own logic (reference and official-style paths
at tiny sizes), the summary and publish tool, the near-tie rule on the torch path, the parity log,
and the script's argument checks. The dry run itself (build + collection) runs in .ci/run."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import models
from benchmarks import gpu_summary, kernels, near_tie, op_cases

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_logic_on_cpu(tmp_path):
    out = tmp_path / "bench"
    args = ["--device", "cpu", "--groups", "nlsa,fold", "--sizes", "12,13", "--fold-sizes", "6",
            "--dtypes", "fp32", "--reps", "1", "--out", str(out)]
    assert kernels.main(args) == 0
    record = json.loads((out / "kernels.json").read_text())
    names = [r["name"] for r in record["rows"]]
    assert "nlsa 1x256x12x12 fp32 reference" in names and "nlsa 1x256x13x13 fp32 official" in names
    assert "fold 1x128x6x6 u2 fp32 official" in names
    # the official-style formulation computes what the reference computes (13x13: the padding path)
    assert {r["name"] for r in record["parity"]} == {"nlsa 1x256x12x12 fp32 official-style vs reference",
                                                     "nlsa 1x256x13x13 fp32 official-style vs reference",
                                                     "fold 1x128x6x6 u2 fp32 official vs reference"}
    assert all(r["passed"] for r in record["parity"])
    speed = {r["name"]: r for r in record["speed"]}
    row = speed["nlsa 1x256x12x12 fp32 reference"]
    assert row["baseline"] == "nlsa 1x256x12x12 fp32 official"
    assert row["ratio"] == pytest.approx(row["baseline_median_ms"] / row["median_ms"], rel=1e-2)
    assert (out / "kernels.md").read_text().startswith("# Kernel benchmarks (cpu)")
    assert kernels.main(args) == 2  # never overwritten silently
    assert kernels.main(args[:-2] + ["--groups", "nope", "--out", str(tmp_path / "x")]) == 2


def test_benchmark_network_groups_on_cpu(tmp_path):
    """The released NLSN x4 and CSNLN x2 groups at tiny sizes (on CPU the "kernels" rows run the reference)."""
    out = tmp_path / "bench"
    assert kernels.main(["--device", "cpu", "--groups", "nlsn_x4,csnln_x2", "--nlsn-size", "12", "--csnln-size", "8",
                         "--dtypes", "fp32", "--reps", "1", "--warmup", "0", "--no-compile", "--out", str(out)]) == 0
    record = json.loads((out / "kernels.json").read_text())
    names = [r["name"] for r in record["rows"]]
    assert names == ["nlsn x4 12x12 fp32 eager reference", "nlsn x4 12x12 fp32 eager reference TF32",
                     "nlsn x4 12x12 fp32 kernels-gather", "csnln x2 8x8 one pass fp32 reference",
                     "csnln x2 8x8 one pass fp32 kernels"]
    assert all(r["median_ms"] > 0 and r["us_per_pixel"] > 0 for r in record["rows"])
    [parity] = record["parity"]  # hash codes compared first (same path twice here: same codes)
    assert parity["passed"] and parity["flipped"] == 0 and parity["note"] == "same hash codes"
    assert {(r["name"], r["baseline"]) for r in record["speed"]} == {
        ("nlsn x4 12x12 fp32 kernels-gather", "nlsn x4 12x12 fp32 eager reference"),
        ("nlsn x4 12x12 fp32 kernels-gather", "nlsn x4 12x12 fp32 eager reference TF32"),
        ("csnln x2 8x8 one pass fp32 kernels", "csnln x2 8x8 one pass fp32 reference")}
    nlsn_target = [t for t in record["targets"] if t["name"].startswith("NLSN x4")]
    assert nlsn_target and nlsn_target[0]["measured"] is None  # no fp16 row measured: the target stays open


def test_bucket_attention_variants_are_detected_without_a_gpu():
    """What the GPU check measures depends on this: both variants once the chunk kernel is in the sources."""
    from plugins import kernels as binding
    path = REPO / "build" / "gpu_check" / "build_90-real" / "libsrdeploy_kernels.so"  # the dry run's build
    if not path.is_file():
        pytest.skip(f"{path} not built (scripts/gpu_check.sh --dry-run builds it; .ci/run runs that first)")
    has_chunk = (REPO / "plugins" / "bucketAttention" / "bucketAttentionChunkKernel.cu").is_file()
    lib = binding.load(path)
    assert kernels.variants_of(lib) == (["gather", "chunk"] if has_chunk else ["gather"])
    assert kernels.VARIANT_ENV not in os.environ  # restored


def test_official_style_attention_matches_reference_with_wrap_and_padding():
    for H, W, cs, R in [(4, 5, 8, 2), (6, 6, 12, 3), (5, 7, 5, 1)]:  # 3, 3 and 7 chunks; padding in two
        q, v, codes, nb = op_cases.attention_inputs(1, H, W, 6, 5, cs, R, seed=H * W, device="cpu", peaky=True)
        q, v = q.double(), v.double()
        want = kernels.reference_nlsa(q, v, codes, nb, cs, R, op_cases.KEY_EPS)
        got = kernels.official_nlsa(q, v, codes, cs, R, op_cases.KEY_EPS)
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_op_cases_cover_the_issue_cases():
    chunks = {op_cases.num_chunks(c.H * c.W, c.cs) for c in op_cases.ATTENTION_CASES}
    assert {1, 2, 3} <= chunks
    assert any((c.H * c.W) % c.cs for c in op_cases.ATTENTION_CASES)  # the padding path
    assert any((c.c, c.C, c.cs, c.R) == (64, 256, 144, 4) for c in op_cases.ATTENTION_CASES)  # released block
    q, v, codes, nb = op_cases.attention_inputs(2, 12, 13, 8, 3, 16, 2, seed=1, device="cpu", peaky=True)
    assert q.shape == (2, 156, 8) and v.shape == (2, 156, 3) and codes.shape == (2, 312)
    assert codes.dtype == torch.int32 and 0 <= int(codes.min()) and int(codes.max()) < nb
    flat = op_cases.attention_inputs(2, 12, 13, 8, 3, 16, 2, seed=1, device="cpu")
    assert torch.allclose(q, 20 * flat[0]) and torch.equal(codes, flat[2])  # LSH is scale-invariant


@pytest.fixture
def small_nlsn():
    torch.manual_seed(0)
    return models.build("nlsn", 2, n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1).eval()


def _run(model, x):
    return model(x)


def test_near_tie_rule_same_codes(small_nlsn):
    x = torch.rand(1, 3, 9, 10, generator=torch.Generator().manual_seed(0))
    row = near_tie.compare_paths(small_nlsn, _run, small_nlsn, _run, x, floor_db=100.0)
    assert row["passed"] and row["flipped"] == 0 and row["note"] == "same hash codes"
    assert not small_nlsn.attention_blocks()[0].__dict__.get("hash_codes")  # the patch is undone


def test_near_tie_rule_bucket_flips(small_nlsn, monkeypatch):
    """Other rotations flip buckets: the forced comparison then shows the rest of the network agrees,
    but the run passes only where the flips are near-ties."""
    import copy
    other = copy.deepcopy(small_nlsn)
    for block in other.attention_blocks():
        block.rotations = torch.roll(block.rotations, 1, dims=-1)
    x = torch.rand(1, 3, 9, 10, generator=torch.Generator().manual_seed(0))
    row = near_tie.compare_paths(other, _run, small_nlsn, _run, x, floor_db=100.0)
    assert row["flipped"] > 0 and row["psnr_db"] < 100 and row["forced_psnr_db"] == float("inf")
    assert not row["passed"] and "without a near-tie" in row["note"]
    monkeypatch.setattr(near_tie, "NEAR_TIE", 1.0)  # every gap counts as a near-tie
    row = near_tie.compare_paths(other, _run, small_nlsn, _run, x, floor_db=100.0)
    assert row["passed"] and row["note"].startswith(f"near-tie: {row['flipped']} positions flipped")


def test_parity_log_rows(tmp_path, monkeypatch):
    log = tmp_path / "parity.jsonl"
    gpu_summary.record_parity("not logged")  # no variable: no file
    monkeypatch.setenv(gpu_summary.PARITY_LOG_ENV, str(log))
    gpu_summary.record_parity("a", psnr_db=float("inf"), floor_db=100.0)
    gpu_summary.record_parity("b", exact=True)
    rows = gpu_summary.read_jsonl(log)
    assert [r["name"] for r in rows] == ["a", "b"] and rows[1]["exact"] is True
    assert gpu_summary.parity_passed(rows[0]) and gpu_summary.parity_passed(rows[1])


def _fake_out_dir(path: Path) -> Path:
    path.mkdir()
    (path / "steps.tsv").write_text("build\tok\t31.5\t0\nkernel_tests\tfailed\t40.2\t1\n"
                                    "enqueue\tskipped\t0\t-1\tnot in this checkout\n")
    (path / "parity.jsonl").write_text(json.dumps({"name": "sort", "exact": True}) + "\n"
                                       + json.dumps({"name": "attn", "psnr_db": 58.0, "floor_db": 60.0}) + "\n")
    (path / "kernels.json").write_text(json.dumps({
        "parity": [{"name": "nlsa", "psnr_db": 120.0, "floor_db": 100.0, "passed": True}],
        "speed": [{"name": "k", "median_ms": 1.0, "baseline": "o", "baseline_median_ms": 9.0, "ratio": 9.0}],
        "memory": [{"name": "k", "peak_mib": 10.0, "baseline": "o", "baseline_peak_mib": 200.0, "ratio": 20.0}],
        "targets": [{"name": "t", "wanted": ">= 8x", "measured": 9.0, "met": True}]}))
    (path / "kernels_chunk.json").write_text(json.dumps({
        "parity": [{"name": "nlsa chunk", "psnr_db": 99.0, "floor_db": 100.0, "passed": False}],
        "environment": {"variants": ["chunk"]}}))
    return path


def test_summary_collect_and_publish(tmp_path, monkeypatch):
    out = _fake_out_dir(tmp_path / "out")
    monkeypatch.setattr(gpu_summary, "environment", lambda: {"device": "NVIDIA H200", "driver": "580.1",
                                                             "cuda": "13.0", "nvcc": "13.0", "torch": "2.11.0"})
    assert gpu_summary.main(["collect", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"device", "driver", "cuda", "torch", "parity", "speed", "memory", "steps"} <= set(summary)
    assert [s["name"] for s in summary["steps"]] == ["build", "kernel_tests", "enqueue"]
    assert summary["steps"][2]["note"] == "not in this checkout"
    assert summary["parity_failed"] == ["attn", "nlsa chunk"] and len(summary["parity"]) == 4
    assert summary["parity"][3]["run"] == "kernels_chunk.json" and summary["speed"][0]["run"] == "kernels.json"
    assert [c["variants"] for c in summary["benchmark_config"]] == [None, ["chunk"]]
    assert "| attn | 58.00 | 60.00 |" in (out / "summary.md").read_text().replace(" FAILED", "")
    dest = tmp_path / "results"
    assert gpu_summary.main(["publish", str(out), "--dest", str(dest)]) == 0
    assert json.loads((dest / "NVIDIA-H200.json").read_text())["speed"][0]["ratio"] == 9.0
    assert (dest / "NVIDIA-H200.md").is_file()
    assert gpu_summary.main(["publish", str(out), "--dest", str(dest)]) == 2  # no silent overwrite
    assert gpu_summary.main(["publish", str(tmp_path / "missing")]) == 2
    assert gpu_summary.gpu_file_stem("NVIDIA H200 NVL") == "NVIDIA-H200-NVL"


def test_gpu_check_script_refuses_bad_arguments(tmp_path):
    script = str(REPO / "scripts" / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    bad = subprocess.run([script, "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    (tmp_path / "old.txt").write_text("keep me")
    for args in ([str(tmp_path)], ["--dry-run", str(tmp_path)]):  # a user's folder is never cleared
        full = subprocess.run([script, *args], capture_output=True, text=True)
        assert full.returncode == 2 and "not empty" in full.stderr
        assert (tmp_path / "old.txt").read_text() == "keep me"


def test_prepare_gpu_run_needs_the_shared_folder(tmp_path):
    run = subprocess.run([str(REPO / "scripts" / "prepare_gpu_run.sh")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SRDEPLOY_SHARED": str(tmp_path / "nowhere")})
    assert run.returncode == 2 and "SRDEPLOY_SHARED" in run.stderr
