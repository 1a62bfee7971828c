"""A user's run never wastes work or disk (issue 13): outputs checked before compute, one line and
exit 2 for every bad input, no temporary files left, the habits of SR tools, help with defaults.

"Nothing computed" is shown without timing: the network constructor (models.build) and the
pipeline's upscale are replaced by counters that must stay at zero when a run is refused.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from benchmarks import common, latency, parity, quality
from models import files
from runtime import imageio, infer
from runtime.backends import TorchBackend
from runtime.pipeline import upscale

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size=(20, 16), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(a[..., 0] if channels == 1 else a, mode).save(path)
    return path


@pytest.fixture
def lr(tmp_path) -> Path:
    d = tmp_path / "lr"
    d.mkdir()
    for k, name in enumerate(("a.png", "b.png", "c.jpg")):
        _image(d / name, seed=k)
    return d


@pytest.fixture
def counters(monkeypatch) -> dict[str, int]:
    """Counts network constructions and upscales (both must be 0 after a refusal)."""
    seen = {"build": 0, "upscale": 0}
    build, up = models.build, infer.upscale

    def counting_build(*a, **k):
        seen["build"] += 1
        return build(*a, **k)

    def counting_upscale(*a, **k):
        seen["upscale"] += 1
        return up(*a, **k)
    monkeypatch.setattr(models, "build", counting_build)
    monkeypatch.setattr(infer, "upscale", counting_upscale)
    return seen


def run(*argv) -> int:
    try:
        return infer.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        return e.code


def one_line(capsys, *needles, prog="python -m runtime.infer") -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error:"), err
    for n in needles:
        assert n in err, err
    return err


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- checks before compute

def test_output_parent_is_a_file_single(lr, ckpt, tmp_path, capsys, counters):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    assert run("-i", lr / "a.png", "-o", blocker / "sub" / "x.png", "--weights", ckpt) == 2
    one_line(capsys, "blocker is a file, not a folder")
    assert "File exists" not in capsys.readouterr().err
    assert counters == {"build": 0, "upscale": 0}


def test_output_folder_under_a_file_folder_mode(lr, ckpt, tmp_path, capsys, counters):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert run("-i", lr, "-o", blocker / "sr", "--weights", ckpt) == 2
    one_line(capsys, "cannot create folder", "blocker is a file, not a folder")
    assert counters == {"build": 0, "upscale": 0}


def test_output_name_taken_by_a_folder(lr, ckpt, tmp_path, capsys, counters):
    out = tmp_path / "sr"
    (out / "b_x2.png").mkdir(parents=True)
    assert run("-i", lr, "-o", out, "--weights", ckpt) == 2
    one_line(capsys, "b_x2.png is a folder, not a file")
    assert counters == {"build": 0, "upscale": 0}


def test_read_only_output_folder_names_the_cause(lr, ckpt, tmp_path, capsys, counters, monkeypatch):
    """The real cause, read-only file system or permission denied (simulated: tests may run as root,
    for whom the permission bits do not apply, and no read-only mount is at hand)."""
    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p) == out else real_access(p, mode))
    monkeypatch.setattr(files, "_read_only", lambda p: True)
    assert run("-i", lr, "-o", out, "--weights", ckpt) == 2
    one_line(capsys, f"folder {out} is not writable (read-only file system)")
    monkeypatch.setattr(files, "_read_only", lambda p: False)
    assert run("-i", lr, "-o", out / "new", "--weights", ckpt) == 2
    one_line(capsys, f"cannot create folder {out / 'new'}", "not writable (permission denied)")
    assert counters == {"build": 0, "upscale": 0} and os.listdir(out) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits: the chmod case cannot fail")
def test_read_only_folder_for_real(lr, ckpt, tmp_path, capsys, counters):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert run("-i", lr, "-o", out, "--weights", ckpt) == 2
        one_line(capsys, "not writable (permission denied)")
    finally:
        out.chmod(0o755)
    assert counters == {"build": 0, "upscale": 0}


@pytest.mark.parametrize("suffix", ["/../x", "../../etc/x", "a/b"])
def test_suffix_cannot_escape_the_output_folder(lr, ckpt, tmp_path, capsys, counters, suffix):
    assert run("-i", lr, "-o", tmp_path / "sr", "--weights", ckpt, "--suffix", suffix) == 2
    err = capsys.readouterr().err
    assert "--suffix" in err and "not a path" in err and "Traceback" not in err
    assert not (tmp_path / "sr").exists() and not (tmp_path / "x_x2.png").exists()
    assert counters == {"build": 0, "upscale": 0}


def test_corrupt_single_image_is_found_before_the_model(tmp_path, ckpt, capsys, counters):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    assert run("-i", bad, "-o", tmp_path / "o.png", "--weights", ckpt) == 2
    one_line(capsys, "bad.png", "cannot read image")
    assert counters == {"build": 0, "upscale": 0}


def test_unsafe_pickle_is_named(lr, tmp_path, capsys, counters):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo never",))
    evil = tmp_path / "evil.pt"
    torch.save({"w": RunsCode()}, evil)
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--weights", evil) == 2
    one_line(capsys, "would run code", "os.system")
    assert counters == {"build": 0, "upscale": 0}


def test_half_is_refused_on_cpu(lr, ckpt, tmp_path, capsys, counters, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--weights", ckpt, "--half") == 2
    one_line(capsys, "--half runs on CUDA only", "--device auto chose cpu")
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--weights", ckpt, "--half", "--device", "cpu") == 2
    one_line(capsys, "--half runs on CUDA only")
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--backend", "ort", "--half") == 2
    one_line(capsys, "--half is for --backend torch", "--precision fp16")
    assert counters == {"build": 0, "upscale": 0} and not (tmp_path / "o.png").exists()


# ----------------------------------------------------------------------------- onnxruntime: errors, cache, leaks

def test_corrupt_onnx_is_one_line(lr, tmp_path, capsys, counters):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(200))
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--backend", "ort", "--onnx", bad) == 2
    one_line(capsys, "bad.onnx", "not a readable ONNX file", "python -m export.onnx")
    assert counters == {"build": 0, "upscale": 0}


def test_ort_cuda_without_provider_is_refused_before_the_export(lr, ckpt, tmp_path, capsys, counters, monkeypatch):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(cache))
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--backend", "ort", "--device", "cuda",
               "--weights", ckpt) == 2
    one_line(capsys, "no CUDA provider", "onnxruntime-gpu")
    assert counters == {"build": 0, "upscale": 0} and not cache.exists()


def test_cache_folder_rule_and_an_unusable_one(lr, ckpt, tmp_path, capsys, counters, monkeypatch):
    from runtime.backends import cache_dir
    monkeypatch.delenv("SRDEPLOY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "srdeploy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "srdeploy"
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(blocker / "cache"))
    assert cache_dir() == blocker / "cache"
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--backend", "ort", "--weights", ckpt) == 2
    one_line(capsys, "SRDEPLOY_CACHE_DIR", "--onnx FILE", "blocker is a file, not a folder")
    assert counters == {"build": 0, "upscale": 0}


def _python(*argv, env=None, module="runtime.infer"):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture(scope="module")
def onnxruntime_own(tmp_path_factory) -> list[str]:
    """What a bare ``import onnxruntime`` leaves in $TMPDIR (1.32: ``.ses``, the session id of its
    telemetry, one small file reused by every process): not ours to remove, so not counted."""
    tmp = tmp_path_factory.mktemp("bare-import")
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env={**os.environ, "TMPDIR": str(tmp)},
                   check=True, timeout=120)
    return _files(tmp)


def test_on_the_fly_export_is_cached_and_leaves_no_temp_files(lr, ckpt, tmp_path, onnxruntime_own):
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "SRDEPLOY_CACHE_DIR": str(cache)}
    first = _python("-i", lr / "a.png", "-o", tmp_path / "1.png", "--backend", "ort", "--weights", ckpt, env=env)
    assert first.returncode == 0, first.stderr
    assert "exported edsr_x2.pt in" in first.stderr and "cached" in first.stderr
    cached = list((cache / "onnx").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".onnx"
    second = _python("-i", lr / "a.png", "-o", tmp_path / "2.png", "--backend", "ort", "--weights", ckpt, env=env)
    assert second.returncode == 0, second.stderr
    assert f"using the cached export of edsr_x2.pt: {cached[0]}" in second.stderr
    assert list((cache / "onnx").iterdir()) == cached
    assert np.array_equal(np.asarray(Image.open(tmp_path / "1.png")), np.asarray(Image.open(tmp_path / "2.png")))
    assert _files(tmp) == onnxruntime_own  # nothing of ours left in the temp folder


def test_interrupted_export_leaves_nothing(lr, ckpt, tmp_path, onnxruntime_own):
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "SRDEPLOY_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", "-i", str(lr / "a.png"), "-o",
                             str(tmp_path / "o.png"), "--backend", "ort", "--weights", str(ckpt)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (cache / "onnx").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the cache folder is made just before the export starts
    if proc.poll() is not None:
        pytest.fail(f"the run ended before its export began: {proc.stderr.read()}")
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == infer.EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err
    assert _files(cache) == [] and _files(tmp) == onnxruntime_own and not (tmp_path / "o.png").exists()


# ----------------------------------------------------------------------------- SR-tool habits

def test_log_lines_summary_and_exit_codes_without_a_terminal(lr, ckpt, tmp_path):
    (lr / "notes.txt").write_text("not an image")
    (lr / "sub").mkdir()
    _image(lr / "sub" / "d.png")
    (lr / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    res = _python("-i", lr, "-o", tmp_path / "sr", "--weights", ckpt)  # stderr is a pipe, not a terminal
    assert res.returncode == infer.EXIT_PARTIAL, res.stderr
    lines = res.stderr.splitlines()
    assert any("[1/4]" in ln and "a.png" in ln and "written" in ln for ln in lines), res.stderr
    assert any("[2/4]" in ln and "b.png" in ln for ln in lines)
    done = next(ln for ln in lines if "done:" in ln)
    assert "3 written" in done and "1 failed" in done and "images/s" in done and " s," in done
    assert any("failed:" in ln and "broken.png" in ln for ln in lines)
    assert any("not images, ignored:" in ln and "notes.txt" in ln for ln in lines)
    assert any("subfolders not searched (pass --recursive):" in ln and "sub" in ln for ln in lines)
    assert _files(tmp_path / "sr") == ["a_x2.png", "b_x2.png", "c_x2.jpg"]
    # nothing written at all: exit 2
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    res = _python("-i", only_bad, "-o", tmp_path / "sr2", "--weights", ckpt)
    assert res.returncode == infer.EXIT_USAGE and "0 written" in res.stderr


def test_skip_existing_resumes(lr, ckpt, tmp_path, capsys, counters):
    out = tmp_path / "sr"
    assert run("-i", lr, "-o", out, "--weights", ckpt) == 0
    kept = {p: (out / p).stat().st_mtime_ns for p in ("a_x2.png", "c_x2.jpg")}
    (out / "b_x2.png").unlink()
    upscales = counters["upscale"]
    capsys.readouterr()
    assert run("-i", lr, "-o", out, "--weights", ckpt, "--skip-existing") == 0
    err = capsys.readouterr().err
    assert counters["upscale"] == upscales + 1 and (out / "b_x2.png").is_file()
    assert all((out / p).stat().st_mtime_ns == t for p, t in kept.items())
    assert "1 written, 2 skipped" in err and "skipped, output exists:" in err
    # all done already: nothing opened, exit 0
    builds = counters["build"]
    assert run("-i", lr, "-o", out, "--weights", ckpt, "--skip-existing") == 0
    assert counters["build"] == builds and "0 written, 3 skipped" in capsys.readouterr().err
    assert run("-i", lr, "-o", out, "--skip-existing", "--overwrite") == 2  # exclusive (argparse)


def test_skip_existing_single_image(lr, ckpt, tmp_path, capsys, counters):
    out = tmp_path / "o.png"
    out.write_bytes(b"keep")
    assert run("-i", lr / "a.png", "-o", out, "--weights", ckpt, "--skip-existing") == 0
    assert "0 written, 1 skipped" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert counters == {"build": 0, "upscale": 0}


def test_export_cli_checks_its_output_before_building(tmp_path, capsys, monkeypatch):
    from export import onnx as export_onnx
    monkeypatch.setattr(export_onnx, "load_model", lambda *a, **k: pytest.fail("built before the refusal"))
    blocker = tmp_path / "f"
    blocker.write_text("x")
    assert export_onnx.main(["--model", "nlsn", "--scale", "2", "-o", str(blocker / "x.onnx")]) == 2
    assert "f is not a directory" in capsys.readouterr().err
    (tmp_path / "x.onnx").write_bytes(b"keep")
    assert export_onnx.main(["--model", "nlsn", "--scale", "2", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "x.onnx").read_bytes() == b"keep"


def test_interrupt_keeps_finished_images_and_no_partial_file(lr, ckpt, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = infer.upscale

    def interrupt_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(infer, "upscale", interrupt_second)
    out = tmp_path / "sr"
    assert run("-i", lr, "-o", out, "--weights", ckpt) == infer.EXIT_INTERRUPTED
    assert "interrupted: 1 written" in capsys.readouterr().err
    assert os.listdir(out) == ["a_x2.png"]  # no half-written or temporary file
    monkeypatch.setattr(infer, "upscale", real)
    assert run("-i", lr, "-o", out, "--weights", ckpt, "--skip-existing") == 0
    assert _files(out) == ["a_x2.png", "b_x2.png", "c_x2.jpg"]


def test_recursive_mirrors_subfolders_and_skips_its_own_output(lr, ckpt, tmp_path):
    (lr / "deep" / "er").mkdir(parents=True)
    _image(lr / "deep" / "d.png")
    _image(lr / "deep" / "er" / "e.bmp")
    (lr / ".hidden").mkdir()
    _image(lr / ".hidden" / "h.png")
    out = lr / "sr"  # inside the input: earlier results must not be upscaled again
    assert run("-i", lr, "-o", out, "--weights", ckpt, "--recursive") == 0
    want = ["a_x2.png", "b_x2.png", "c_x2.jpg", "deep/d_x2.png", "deep/er/e_x2.bmp"]
    assert _files(out) == want
    assert run("-i", lr, "-o", out, "--weights", ckpt, "--recursive", "--skip-existing") == 0
    assert _files(out) == want


def test_tiff_input(ckpt, tmp_path):
    src = tmp_path / "scan.tif"
    _image(src)
    g16 = (np.arange(16 * 20).reshape(16, 20) * 200).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "deep.tiff")  # 16-bit gray TIFF (mode I;16)
    assert run("-i", tmp_path, "-o", tmp_path / "sr", "--weights", ckpt) == 0
    assert _files(tmp_path / "sr") == ["deep_x2.png", "scan_x2.png"]  # TIFF is read, PNG written
    deep = imageio.read_image(tmp_path / "sr" / "deep_x2.png")
    assert deep.bit_depth == 16 and deep.pixels.shape == (32, 40, 1)
    assert imageio.read_image(tmp_path / "deep.tiff").bit_depth == 16


def test_outscale_uses_the_project_bicubic(lr, ckpt, tmp_path):
    from runtime.resize import imresize
    assert run("-i", lr / "a.png", "-o", tmp_path / "o.png", "--weights", ckpt, "--outscale", 3) == 0
    assert Image.open(tmp_path / "o.png").size == (60, 48)
    backend = TorchBackend(models.load(ckpt))
    sr = upscale(imageio.read_image(lr / "a.png").pixels, backend)
    want = imageio.quantize(np.clip(imresize(sr, output_shape=(48, 60)), 0, 1), 8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), want)
    assert run("-i", lr / "a.png", "-o", tmp_path / "h.png", "--weights", ckpt, "--outscale", 1.5) == 0
    assert Image.open(tmp_path / "h.png").size == (30, 24)
    assert run("-i", lr / "a.png", "-o", tmp_path / "z.png", "--weights", ckpt, "--outscale", 0) == 2


def test_alpha_upsampler(ckpt, tmp_path):
    src = _image(tmp_path / "rgba.png", mode="RGBA")
    assert run("-i", src, "-o", tmp_path / "b.png", "--weights", ckpt) == 0
    assert run("-i", src, "-o", tmp_path / "m.png", "--weights", ckpt, "--alpha-upsampler", "model") == 0
    backend = TorchBackend(models.load(ckpt))
    pixels = imageio.read_image(src).pixels
    by_model = imageio.quantize(upscale(pixels[..., 3:], backend)[..., 0], 8)
    got_m, got_b = np.asarray(Image.open(tmp_path / "m.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert np.array_equal(got_m[..., 3], by_model)
    assert np.array_equal(got_m[..., :3], got_b[..., :3]) and not np.array_equal(got_m[..., 3], got_b[..., 3])


def test_quality_sets_jpeg_and_webp_size(lr, ckpt, tmp_path, capsys):
    sizes = {}
    for q in (20, 95):
        for ext in ("jpg", "webp"):
            out = tmp_path / f"q{q}.{ext}"
            assert run("-i", lr / "a.png", "-o", out, "--weights", ckpt, "--quality", q) == 0
            sizes[q, ext] = out.stat().st_size
    assert sizes[20, "jpg"] < sizes[95, "jpg"] and sizes[20, "webp"] < sizes[95, "webp"]
    assert run("-i", lr / "a.png", "-o", tmp_path / "x.png", "--weights", ckpt, "--quality", 101) == 2
    capsys.readouterr()
    assert run("-i", lr / "a.png", "-o", tmp_path / "p.png", "--weights", ckpt, "--quality", 50) == 0
    assert "--quality applies to JPEG and WebP outputs only" in capsys.readouterr().err


def test_half_keeps_hashing_and_softmax_statistics_in_fp32():
    """--half's backend (run here on the CPU, which the CLI refuses only for speed): softmax,
    logsumexp and bucket attention see fp32, and the result stays close to fp32."""
    from runtime.backends import Fp32Statistics
    torch.manual_seed(0)
    net = models.build("nlsn", 2, n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=255)
    backend = TorchBackend(net)
    x = torch.rand(1, 3, 12, 12)
    y32 = backend(x)
    seen = []
    real = Fp32Statistics.__torch_function__

    def spy(self, func, types, args=(), kwargs=None):
        if func in Fp32Statistics.FP32_OPS or "bucket_attention" in str(func):
            seen.append(args[0].dtype)
        return real(self, func, types, args, kwargs)
    Fp32Statistics.__torch_function__ = spy
    try:
        y16 = backend.half()(x)
    finally:
        Fp32Statistics.__torch_function__ = real
    assert seen and set(seen) == {torch.float16}  # fp16 arrives, and the mode computes it in fp32
    from models.nlsn import NonLocalSparseAttention
    blocks = [m for m in backend.model.modules() if isinstance(m, NonLocalSparseAttention)]
    assert blocks and all(b.rotations.dtype == torch.float32 for b in blocks)  # hashing stays fp32
    assert y16.dtype == torch.float32
    mse = float(((y16.double() - y32.double()) ** 2).mean())
    assert 10 * np.log10(1 / mse) >= 45  # the fp16 floor of DESIGN.md §5


def test_device_auto_picks_cuda_when_available(monkeypatch):
    args = infer.build_parser().parse_args(["-i", "x.png", "-o", "y.png"])
    assert args.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert infer._resolve_device(args) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert infer._resolve_device(args) == "cpu"
    for good in ("cpu", "cuda", "cuda:1"):
        assert infer.build_parser().parse_args(["-i", "x", "-o", "y", "--device", good]).device == good
    with pytest.raises(SystemExit) as e:
        infer.build_parser().parse_args(["-i", "x", "-o", "y", "--device", "tpu"])
    assert e.value.code == 2


# ----------------------------------------------------------------------------- benchmarks

def test_benchmark_out_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "results"
    blocker.write_text("x")
    monkeypatch.setattr(parity, "run", lambda *a: pytest.fail("computed before the refusal"))
    monkeypatch.setattr(latency, "run", lambda *a: pytest.fail("computed before the refusal"))
    for module, prog in ((parity, "python -m benchmarks.parity"), (latency, "python -m benchmarks.latency")):
        with pytest.raises(SystemExit) as e:
            module.main(["--models", "edsr", "--scales", "2", "--out-dir", str(blocker)])
        assert e.value.code == 2
        one_line(capsys, "results is a file, not a folder", prog=prog)
        with pytest.raises(SystemExit) as e:
            module.main(["--models", "edsr", "--scales", "2", "--out-dir", str(tmp_path / "ok"),
                         "--work-dir", str(blocker / "w")])
        assert e.value.code == 2
        one_line(capsys, "--work-dir", "results is a file, not a folder", prog=prog)


def test_quality_json_under_a_file(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    monkeypatch.setattr(quality, "run", lambda *a: pytest.fail("computed before the refusal"))
    with pytest.raises(SystemExit) as e:
        quality.main(["--json", str(blocker / "q.json")])
    assert e.value.code == 2
    one_line(capsys, "f is a file, not a folder", prog="python -m benchmarks.quality")


def test_latency_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setattr(latency, "run", lambda *a: pytest.fail("computed before the refusal"))
    with pytest.raises(SystemExit) as e:
        latency.main(["--models", "edsr", "--scales", "2", "--out-dir", str(tmp_path)])
    assert e.value.code == 2
    one_line(capsys, "matplotlib is not installed", "--no-plot", prog="python -m benchmarks.latency")
    assert os.listdir(tmp_path) == []


def test_benchmarks_default_to_bundled_weights():
    from models import weights as bundled
    nlsn = bundled.find("nlsn", 2)
    assert common.weights_for("nlsn", 2, None) == str(nlsn.path)
    assert common.weights_for("edsr", 2, None) is None  # nothing bundled: random
    assert common.weights_for("nlsn", 2, None, random_weights=True) is None
    assert common.weights_for("nlsn", 2, "w/{model}_x{scale}.pt") == "w/nlsn_x2.pt"
    net = common.build_model("nlsn", 2, "small", (), common.weights_for("nlsn", 2, None))
    assert net.config["n_feats"] == nlsn.config["n_feats"]
    for module in (parity, latency):
        args = module.build_parser().parse_args([])
        assert args.weights is None and not args.random_weights


def test_benchmark_work_folder_is_removed(tmp_path, monkeypatch):
    seen = []

    def fake_run(args, work):
        seen.append(work)
        assert work.is_dir()
        return [], {"exports": [], "work_dir": "temporary (removed)"}
    monkeypatch.setattr(parity, "run", fake_run)
    assert parity.main(["--models", "edsr", "--scales", "2", "--out-dir", str(tmp_path)]) == 0
    assert seen and not seen[0].exists()
    assert json.loads((tmp_path / "parity.json").read_text())["work_dir"] == "temporary (removed)"


# ----------------------------------------------------------------------------- help

@pytest.mark.parametrize("module,needles", [
    ("runtime.infer", ["examples:", "exit status:", "--alpha-upsampler {bicubic,model}", "(default: bicubic)",
                       "(default: auto", "--backend {torch,ort,trt}", "(default: torch)", "--skip-existing",
                       "--recursive", "--outscale", "--quality", "--half", "(default: 32)"]),
    ("export.onnx", ["examples:", "--model {nlsn,csnln,edsr}", "--scale {2,3,4}", "--ops {plugin,onnx}",
                     "(default: onnx)", "(default: fp32)", "(default: 18)"]),
    ("benchmarks.quality", ["examples:", "--model {bicubic,nlsn,csnln,edsr}", "(default: bicubic)",
                            "(default: 2,3,4)"]),
    ("benchmarks.parity", ["examples:", "--backends", "(default: onnxruntime-cpu,onnxruntime-cuda,tensorrt)",
                           "(default: fp32,fp16)", "bundled compact weights", "--random-weights",
                           "(default: results)"]),
    ("benchmarks.latency", ["examples:", "(default: 20)", "(default: 3)", "(default: cpu)",
                            "bundled compact weights", "--random-weights", "--no-plot"]),
])
def test_help_shows_choices_defaults_and_examples(module, needles):
    import importlib
    text = " ".join(importlib.import_module(module).build_parser().format_help().split())
    for n in needles:
        assert " ".join(n.split()) in text, (module, n)
