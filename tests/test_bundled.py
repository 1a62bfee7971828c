"""Bundled default weights: manifest ↔ files, they load as described, they are the defaults, they work."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

import models
from benchmarks import quality
from models import weights as bundled
from runtime import infer
from runtime.backends import default_weights, resolve_weights, WeightsRequired
from runtime.imageio import read_image
from runtime.metrics import psnr_y
from runtime.pipeline import load_upscaler, upscale
from runtime.resize import imresize_uint8
from runtime.samples import render

ENTRIES = bundled.entries()
NAMES = [f"{e.model}_x{e.scale}" for e in ENTRIES]


def test_manifest_lists_every_file_with_its_hash():
    m = bundled.manifest()
    assert {(e.model, e.scale) for e in ENTRIES} == {(a, s) for a in ("nlsn", "csnln") for s in (2, 3, 4)}
    assert sorted(p.name for p in bundled.FOLDER.glob("*.pt")) == sorted(e.path.name for e in ENTRIES)
    total = 0
    for e in ENTRIES:
        data = e.path.read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == e.sha256, e.path.name
        assert e.info["bytes"] == len(data)
        t = e.info["training"]
        assert t["data"] == "T91" and t["steps"] > 0 and t["seconds"] > 0 and "seed" in t and t["stages"]
    assert total < 8 * 2**20  # a few MB in all
    assert bundled.default_model_scale() in {(e.model, e.scale) for e in ENTRIES}
    assert m["default"]["model"] == "nlsn"


@pytest.mark.parametrize("entry", ENTRIES, ids=NAMES)
def test_loads_back_as_described(entry):
    net = models.load(entry.path, **entry.overrides)  # what every backend does
    assert (net.name, net.scale) == (entry.model, entry.scale)
    assert net.config == entry.config  # including what the file cannot tell (res_scale, chunk_size, ...)


@pytest.mark.parametrize("entry", ENTRIES, ids=NAMES)
def test_recorded_quality_beats_bicubic(entry):
    q = entry.info["quality"]
    assert set(q) >= {"Set5", "Set14", "B100", "Urban100"}
    for name, r in q.items():
        assert r["psnr"] > r["bicubic"], (name, r)
    if entry.scale == 2:
        assert q["Set5"]["psnr"] >= q["Set5"]["bicubic"] + 2.0


def test_defaults_resolve():
    assert default_weights("nlsn", 2) == bundled.FOLDER / "nlsn_x2.pt"
    assert resolve_weights(None, "csnln", 3) == bundled.FOLDER / "csnln_x3.pt"
    model, scale = bundled.default_model_scale()
    assert resolve_weights(None) == bundled.FOLDER / f"{model}_x{scale}.pt"
    assert resolve_weights(None, None, 3) == bundled.FOLDER / f"{model}_x3.pt"
    assert resolve_weights("mine.pt", "nlsn", 2).name == "mine.pt"
    with pytest.raises(WeightsRequired, match="pass --weights PATH"):
        resolve_weights(None, "edsr", 2)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``runtime.infer`` on the sample image with no --weights: (exit code, stderr, output path)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("sr") / "sample_sr.png"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = infer.main(["-i", str(render.SAMPLE), "-o", str(out)])
    return code, err.getvalue(), out


def test_infer_without_weights_uses_and_names_the_bundled_model(default_run, tmp_path, capsys):
    code, err, out = default_run
    model, scale = bundled.default_model_scale()
    assert code == 0
    assert f"using the bundled {model.upper()} x{scale}" in err and f"{model}_x{scale}.pt" in err
    lr = read_image(render.SAMPLE).pixels
    assert read_image(out).pixels.shape == (lr.shape[0] * scale, lr.shape[1] * scale, 3)

    crop = tmp_path / "crop.png"
    Image.open(render.SAMPLE).crop((0, 0, 48, 48)).save(crop)
    assert infer.main(["-i", str(crop), "-o", str(tmp_path / "c.png"), "--model", "csnln", "--scale", "3"]) == 0
    assert "using the bundled CSNLN x3 (csnln_x3.pt" in capsys.readouterr().err
    assert read_image(tmp_path / "c.png").pixels.shape == (144, 144, 3)
    assert infer.main(["-i", str(crop), "-o", str(tmp_path / "e.png"), "--model", "edsr"]) == 2
    assert "pass --weights PATH" in capsys.readouterr().err


def test_default_output_is_sharper_than_bicubic(default_run):
    """The README's main-job command: the bundled default beats bicubic on the sample's ground truth."""
    _, _, out = default_run
    hr = render.render_hr()
    scale = render.SAMPLE_SCALE
    assert bundled.default_model_scale()[1] == scale
    lr = np.asarray(Image.open(render.SAMPLE).convert("RGB"))
    sr = np.asarray(Image.open(out).convert("RGB"))
    gain = psnr_y(sr, hr, border=scale) - psnr_y(imresize_uint8(lr, scale), hr, border=scale)
    assert gain > 1.5, gain  # measured: +2.2 dB (NLSN x2)


def test_sample_is_the_rendered_image():
    hr = render.render_hr()
    lr = np.asarray(Image.open(render.SAMPLE).convert("RGB"))
    assert hr.shape == (render.HR_SIZE, render.HR_SIZE, 3)
    assert lr.shape == (render.HR_SIZE // render.SAMPLE_SCALE,) * 2 + (3,)
    # the same drawing (fonts may differ by a pixel across Pillow versions)
    assert np.abs(render.make_lr(hr, render.SAMPLE_SCALE).astype(int) - lr).mean() < 2.0


@pytest.mark.parametrize("model,scale,floor", [("nlsn", 4, 0.3), ("csnln", 4, 0.25)])
def test_bundled_beats_bicubic_on_the_sample(model, scale, floor):
    hr = render.render_hr()[192:, :192]  # text and checkerboard: a quarter keeps the test quick
    lr = render.make_lr(hr, scale)
    backend = load_upscaler(model, scale)
    tiles = dict(tile=24, tile_pad=4) if model == "csnln" else dict(tile=0)  # as benchmarks.quality runs it
    sr = np.floor(np.clip(upscale(lr.astype(np.float32) / 255, backend, **tiles), 0, 1) * 255 + 0.5).astype(np.uint8)
    gain = psnr_y(sr, hr, border=scale) - psnr_y(imresize_uint8(lr, scale), hr, border=scale)
    assert gain > floor, gain  # measured: NLSN x4 +0.57 dB, CSNLN x4 +0.48 dB


def test_quality_cli_uses_bundled_weights(shared_dir, tmp_path, capsys):
    bench = shared_dir / "data" / "benchmark"
    if not (bench / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark data not found at {bench}")
    out = tmp_path / "q.json"
    assert quality.main(["--model", "nlsn", "--scale", "4", "--sets", "Set5", "--limit", "1",
                         "--data-dir", str(bench), "--json", str(out), "--no-progress"]) == 0
    assert "using the bundled NLSN x4" in capsys.readouterr().err
    import json

    row = json.loads(out.read_text())["results"][0]
    assert row["weights"].endswith("nlsn_x4.pt")


def test_bundle_writes_weights_and_manifest_atomically(tmp_path, monkeypatch):
    """``python -m models.weights.bundle`` into a scratch folder: the shipped files appear whole,
    with a plain file's permissions, and no temporary file is left behind."""
    import json
    import os

    import torch

    from models.weights import bundle

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(bundle, "FOLDER", folder)
    monkeypatch.setattr(bundle, "MANIFEST", folder / "manifest.json")
    net = models.build("edsr", 2, n_resblocks=1, n_feats=8, res_scale=1.0)
    run = tmp_path / "runs" / "edsr_x2"
    run.mkdir(parents=True)
    torch.save(net.state_dict(), run / "weights.pt")
    stage = dict(data="T91", steps=5, seconds=1.5, seed=0, hardware="test", device="cpu", threads=1, torch="x")
    (run / "train.json").write_text(json.dumps(dict(model="edsr", scale=2, config=net.config, training=stage)))
    assert bundle.main(["--entry", f"edsr_x2={run}", "--default", "edsr_x2"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["edsr_x2.pt", "manifest.json"]
    entry = json.loads((folder / "manifest.json").read_text())["models"]["edsr_x2"]
    shipped = folder / "edsr_x2.pt"
    assert entry["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest() and entry["training"]["steps"] == 5
    assert models.load(shipped).config == net.config
    umask = os.umask(0)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in folder.iterdir())
