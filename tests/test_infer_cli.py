"""``python -m runtime.infer`` end to end: real images, tiny checkpoints, every bad-input case."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from runtime import imageio, infer
from runtime.backends import TorchBackend
from runtime.pipeline import upscale

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(shared_dir, tmp_path_factory) -> Path:
    """Small crops of Set5/Set14 images in every supported format and layout."""
    d = tmp_path_factory.mktemp("lr")
    hr = shared_dir / "data/benchmark"
    baby = Image.open(hr / "Set5/HR/baby.png").convert("RGB").resize((40, 32), Image.BICUBIC)
    bird = Image.open(hr / "Set5/HR/bird.png").convert("RGB").resize((30, 26), Image.BICUBIC)
    baby.save(d / "baby.png")
    bird.save(d / "bird.jpg", quality=95)
    bird.save(d / "bird_bmp.bmp")
    baby.save(d / "baby_webp.webp", lossless=True)
    baby.convert("L").save(d / "gray.png")
    rgba = baby.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(baby.size))
    rgba.save(d / "rgba.png")
    q16 = (np.asarray(bird, np.uint32) * 257 + np.arange(26 * 30 * 3).reshape(26, 30, 3) % 200).astype(np.uint16)
    imageio.write_image(d / "deep.png", q16 / 65535.0, 16)
    (d / "notes.txt").write_text("not an image: skipped in folder mode")
    return d


def run(*argv) -> int:
    try:
        return infer.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        return e.code


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("python -m runtime.infer: error:"), err
    for n in needles:
        assert n in err, err
    return err


# ----------------------------------------------------------------------------- working runs

def test_folder_of_every_kind(images, ckpt, tmp_path):
    out = tmp_path / "sr"
    assert run("-i", images, "-o", out, "--weights", ckpt, "--tile", 12, "--tile-pad", 8) == 0
    expect = {  # name: (size, Pillow mode or 16-bit channels)
        "baby_x2.png": ((80, 64), "RGB"), "bird_x2.jpg": ((60, 52), "RGB"), "bird_bmp_x2.bmp": ((60, 52), "RGB"),
        "baby_webp_x2.webp": ((80, 64), "RGB"), "gray_x2.png": ((80, 64), "L"), "rgba_x2.png": ((80, 64), "RGBA"),
    }
    assert sorted(os.listdir(out)) == sorted([*expect, "deep_x2.png"])
    for name, (size, mode) in expect.items():
        with Image.open(out / name) as im:
            assert (im.size, im.mode) == (size, mode), name
    deep = imageio.read_image(out / "deep_x2.png")
    assert deep.bit_depth == 16 and deep.pixels.shape == (52, 60, 3)
    assert len(np.unique(imageio.quantize(deep.pixels, 16) % 257)) > 1  # not 8-bit data in a 16-bit file


def test_output_is_the_pipeline_result(images, ckpt, tmp_path):
    out = tmp_path / "baby_sr.png"
    assert run("-i", images / "baby.png", "-o", out, "--weights", ckpt, "--self-ensemble") == 0
    backend = TorchBackend(models.load(ckpt))
    expected = imageio.quantize(upscale(imageio.read_image(images / "baby.png").pixels, backend, self_ensemble=True), 8)
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_suffix_ext_and_explicit_model_scale(images, ckpt, tmp_path):
    out = tmp_path / "o"
    assert run("-i", images / "bird.jpg", "-o", out, "--weights", ckpt, "--model", "edsr", "--scale", 2,
               "--suffix", "", "--ext", "png", "--official-chop") == 0
    assert os.listdir(out) == ["bird.png"]


@pytest.mark.parametrize("name,scale,cfg,size", [
    ("csnln", 3, dict(n_feats=16, depth=1, rgb_range=1), (13, 11)),  # not multiples of 3: padded
    ("nlsn", 2, dict(n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1), (3, 5)),  # 15 < chunk
])
def test_sizes_the_network_cannot_take(tmp_path, name, scale, cfg, size):
    torch.manual_seed(0)
    w = tmp_path / "w.pt"
    torch.save(models.build(name, scale, **cfg).state_dict(), w)
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(src)
    assert run("-i", src, "-o", tmp_path / "out.png", "--weights", w) == 0
    assert Image.open(tmp_path / "out.png").size == (size[1] * scale, size[0] * scale)


def test_overwrite(images, ckpt, tmp_path, capsys):
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    before = out.stat().st_mtime_ns
    assert run("-i", images / "baby.png", "-o", out, "--weights", ckpt) == 2
    one_line_error(capsys, str(out), "--overwrite")
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before
    assert run("-i", images / "baby.png", "-o", out, "--weights", ckpt, "--overwrite") == 0
    assert Image.open(out).size == (80, 64)


def test_existing_output_in_folder_mode_stops_before_any_work(images, ckpt, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "gray_x2.png").write_bytes(b"precious")
    assert run("-i", images, "-o", out, "--weights", ckpt) == 2
    one_line_error(capsys, "gray_x2.png", "--overwrite")
    assert os.listdir(out) == ["gray_x2.png"] and (out / "gray_x2.png").read_bytes() == b"precious"


def test_bad_image_in_a_folder_does_not_stop_the_others(images, ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("baby.png", "gray.png"):
        (src / name).write_bytes((images / name).read_bytes())
    (src / "broken.png").write_bytes((images / "baby.png").read_bytes()[:100])
    out = tmp_path / "out"
    assert run("-i", src, "-o", out, "--weights", ckpt) == infer.EXIT_PARTIAL  # was 2: partly done is now 3
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 3 images failed" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == ["baby_x2.png", "gray_x2.png"]


# ----------------------------------------------------------------------------- refused runs

def test_corrupt_single_image_writes_nothing(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert run("-i", bad, "-o", tmp_path / "out", "--weights", ckpt) == 2
    one_line_error(capsys, "bad.jpg", "cannot read image")
    assert sorted(os.listdir(tmp_path)) == ["bad.jpg"]


def test_missing_weights(images, tmp_path, capsys):
    # NLSN and CSNLN have bundled weights; EDSR has none
    assert run("-i", images / "baby.png", "-o", tmp_path / "o.png", "--model", "edsr", "--scale", 4) == 2
    one_line_error(capsys, "no weights given for edsr x4 and none bundled",
                   "pass --weights PATH to an official NLSN/CSNLN/EDSR checkpoint")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["missing input", "input extension", "output extension", "folder to file",
                                  "folder to existing file", "empty folder", "ext contradicts",
                                  "scale mismatch", "model mismatch", "no cuda", "weights not found",
                                  "weights corrupt", "chop and tile"])
def test_refused(case, images, ckpt, tmp_path, capsys, monkeypatch):
    base = ["-i", images / "baby.png", "-o", tmp_path / "o.png", "--weights", ckpt]
    args, needles = {
        "missing input": (["-i", tmp_path / "nope.png", "-o", tmp_path / "o.png", "--weights", ckpt], ["nope.png", "not found"]),
        "input extension": (["-i", images / "notes.txt", "-o", tmp_path / "o.png", "--weights", ckpt], ["notes.txt", "unsupported"]),
        "output extension": (["-i", images / "baby.png", "-o", tmp_path / "o.tiff", "--weights", ckpt], ["o.tiff", "unsupported"]),
        "folder to file": (["-i", images, "-o", tmp_path / "o.png", "--weights", ckpt], ["must be a folder", "o.png"]),
        "folder to existing file": (["-i", images, "-o", ckpt, "--weights", ckpt], ["must be a folder", "is a file"]),
        "empty folder": (["-i", tmp_path, "-o", tmp_path / "o", "--weights", ckpt], ["no images"]),
        "ext contradicts": (base + ["--ext", "jpg"], ["--ext jpg"]),
        "scale mismatch": (base + ["--scale", 4], ["--scale 4", "edsr x2"]),
        "model mismatch": (base + ["--model", "nlsn"], ["--model nlsn", "edsr x2"]),
        "no cuda": (base + ["--device", "cuda"], ["CUDA is not available"]),
        "weights not found": (["-i", images / "baby.png", "-o", tmp_path / "o.png", "--weights", tmp_path / "w.pt"], ["w.pt"]),
        "weights corrupt": (["-i", images / "baby.png", "-o", tmp_path / "o.png", "--weights", images / "notes.txt"], ["notes.txt"]),
        "chop and tile": (base + ["--official-chop", "--tile", 64], ["--official-chop"]),
    }[case]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(*args) == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o").exists()


def test_argparse_errors_exit_2(images, capsys):
    assert run("-i", images / "baby.png") == 2  # no -o
    assert run("-i", images / "baby.png", "-o", "x.png", "--tile", "-3") == 2
    assert run("-i", images / "baby.png", "-o", "x.png", "--backend", "trt") == 2
    capsys.readouterr()


# ----------------------------------------------------------------------------- as a program

def _python(*argv, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "runtime.infer", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_program_runs_and_fails_cleanly(images, ckpt, tmp_path):
    out = tmp_path / "sr.webp"
    ok = _python("-i", images / "rgba.png", "-o", out, "--weights", ckpt, "--tile", 16)
    assert ok.returncode == 0, ok.stderr
    with Image.open(out) as im:
        assert im.size == (80, 64) and im.mode == "RGBA"
    bad = _python("-i", images / "baby.png", "-o", tmp_path / "x.png", "--model", "edsr")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--weights PATH" in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_help():
    res = _python("--help")
    assert res.returncode == 0
    for flag in ("--tile-pad", "--self-ensemble", "--official-chop", "--overwrite", "--backend {torch,ort,trt}",
                 "--onnx PATH", "--engine PATH"):
        assert flag in res.stdout


# ----------------------------------------------------------------------------- other backends

def test_onnxruntime_backend_matches_torch(images, ckpt, tmp_path):
    """--backend ort, from an exported file and exported on the fly, gives the torch backend's image."""
    from export.onnx import export_model
    onnx_path = tmp_path / "edsr_x2.onnx"
    export_model(models.load(ckpt), onnx_path, mode="onnx")
    src = images / "baby.png"
    assert run("-i", src, "-o", tmp_path / "torch.png", "--weights", ckpt) == 0
    assert run("-i", src, "-o", tmp_path / "file.png", "--backend", "ort", "--onnx", onnx_path) == 0
    assert run("-i", src, "-o", tmp_path / "fly.png", "--backend", "ort", "--weights", ckpt) == 0
    ref = imageio.read_image(tmp_path / "torch.png").pixels
    for name in ("file.png", "fly.png"):
        got = imageio.read_image(tmp_path / name).pixels
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1 / 255 + 1e-6  # at most one 8-bit level of rounding


@pytest.mark.parametrize("argv,needles", [
    (["--onnx", "m.onnx"], ["--onnx goes with --backend ort"]),
    (["--engine", "m.engine"], ["--engine goes with --backend trt"]),
    (["--backend", "trt"], ["--backend trt needs --engine PATH", "python -m runtime.build"]),
    (["--backend", "trt", "--engine", "nope.engine"], ["engine nope.engine not found", "python -m runtime.build"]),
    (["--backend", "ort", "--onnx", "nope.onnx"], ["no such ONNX file", "python -m export.onnx"]),
])
def test_backend_flags_refused(argv, needles, images, tmp_path, capsys):
    assert run("-i", images / "baby.png", "-o", tmp_path / "o.png", *argv) == 2
    one_line_error(capsys, *needles)
    assert os.listdir(tmp_path) == []
