"""benchmarks.quality: the bicubic baseline reproduces published PSNR; CLI errors are clear."""
import json

import numpy as np
import pytest

from benchmarks import quality
from runtime.resize import imresize


@pytest.fixture(scope="module")
def bench_dir(shared_dir):
    d = shared_dir / "data" / "benchmark"
    if not (d / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark data not found at {d}")
    return d


@pytest.mark.parametrize("set_name,scale", [("Set5", 2), ("Set5", 3), ("Set5", 4), ("Set14", 2)])
def test_bicubic_reproduces_published(bench_dir, set_name, scale):
    # Published bicubic PSNR (SRCNN/VDSR/EDSR tables) within 0.02 dB. Set14
    # covers the grayscale image (bridge), whose gray values are the luminance.
    files = quality.find_images(bench_dir, set_name)
    r = quality.evaluate_set(files, scale, quality.bicubic_sr_fn(scale), progress=False)
    pub_psnr, pub_ssim = quality.PUBLISHED_BICUBIC[(set_name, scale)]
    assert r["n_images"] == quality.FULL_SET_SIZES[set_name]
    assert abs(r["psnr"] - pub_psnr) < 0.02, r["psnr"]
    # The published SSIM came from a Y-only float pipeline; RGB uint8 LR is
    # within a thousandth of it.
    assert abs(r["ssim"] - pub_ssim) < 1e-3, r["ssim"]


def test_modcrop_and_load(bench_dir):
    assert quality.modcrop(np.zeros((13, 17, 3)), 4).shape == (12, 16, 3)
    assert quality.modcrop(np.zeros((12, 16)), 3).shape == (12, 15)
    img = quality.load_hr(quality.find_images(bench_dir, "Set5")[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_model_sr_fn_handles_rgb_and_gray():
    def upscale(x):  # float32 HxWx3 in [0, 1] -> x2, with a slight colour cast
        assert x.dtype == np.float32 and x.ndim == 3 and x.shape[2] == 3
        return imresize(x, 2) + np.array([0.0, 0.002, -0.002])
    sr = quality.model_sr_fn(upscale)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    out = sr(rgb)
    assert out.shape == (12, 14, 3) and out.dtype == np.uint8
    gray = rgb[..., 0]
    out = sr(gray)  # replicated to RGB for the network, averaged back to one channel
    assert out.shape == (12, 14) and out.dtype == np.uint8
    # same as bicubic in float, quantised once (the cast averages out)
    want = np.floor(np.clip(imresize(gray.astype(np.float32) / 255, 2) * 255, 0, 255) + 0.5)
    assert np.abs(out - want).max() <= 1 and np.mean(out == want) > 0.95


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        quality.main(argv)
    return e.value, capsys.readouterr().err


def test_cli_errors(bench_dir, tmp_path, capsys):
    exit_, _ = _run(["--sets", "Set6", "--data-dir", str(bench_dir)], capsys)
    assert "unknown or empty set 'Set6'" in str(exit_.code) and "Set5" in str(exit_.code)

    exit_, _ = _run(["--sets", "Set5", "--data-dir", str(tmp_path / "nope")], capsys)
    assert "--data-dir" in str(exit_.code)

    for bad in ("1", "x2"):
        exit_, err = _run(["--scale", bad], capsys)
        assert exit_.code == 2 and "scale must be" in err

    exit_, err = _run(["--model", "edsr", "--scale", "2"], capsys)
    assert exit_.code == 2 and "needs --weights" in err and "no bundled edsr weights" in err
    exit_, err = _run(["--model", "nlsn", "--scale", "2", "4", "--weights", "w.pt"], capsys)
    assert exit_.code == 2 and "{scale}" in err
    exit_, err = _run(["--model", "csnln", "--scale", "8", "--weights", "w.pt"], capsys)
    assert exit_.code == 2 and "supports scales" in err

    existing = tmp_path / "q.json"
    existing.write_text("{}")
    exit_, err = _run(["--json", str(existing)], capsys)
    assert exit_.code == 2 and "--overwrite" in err
    assert existing.read_text() == "{}"


def test_cli_writes_json_atomically(bench_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "q.json"
    args = ["--scale", "2", "--sets", "Set5", "--limit", "2", "--data-dir", str(bench_dir),
            "--json", str(out), "--no-progress"]
    assert quality.main(args) == 0
    stdout = capsys.readouterr().out
    assert "Set5" in stdout and "x2" in stdout
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert row["set"] == "Set5" and row["scale"] == 2 and row["n_images"] == 2
    assert "published_bicubic" not in row  # only 2 of 5 images
    assert [p["name"] for p in row["per_image"]] == ["baby", "bird"]
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    assert quality.main(args + ["--overwrite"]) == 0


def test_model_path_runs_the_network(bench_dir, tmp_path, capsys):
    """A real (tiny, untrained) EDSR checkpoint per scale goes through runtime.pipeline."""
    import torch

    import models
    for scale in (2, 3):
        torch.manual_seed(scale)
        net = models.build("edsr", scale, n_resblocks=1, n_feats=8, rgb_range=1)
        torch.save(net.state_dict(), tmp_path / f"edsr_x{scale}.pt")
    out = tmp_path / "q.json"
    args = ["--model", "edsr", "--scale", "2", "3", "--weights", str(tmp_path / "edsr_x{scale}.pt"),
            "--sets", "Set5", "--limit", "1", "--data-dir", str(bench_dir), "--no-progress",
            "--tile", "64", "--json", str(out)]
    assert quality.main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["weights"] for r in rows] == [str(tmp_path / "edsr_x2.pt"), str(tmp_path / "edsr_x3.pt")]
    # an untrained network is far from the HR image, but its PSNR is a real, finite number
    assert all(0 < r["psnr"] < 30 for r in rows)
    assert "Set5" in capsys.readouterr().out
