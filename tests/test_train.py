"""models.train: a few steps on tiny configurations; resume is bit-identical; runs are seeded."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import models
from models import train
from models.errors import SrdeployError
from models.files import sha256_file

TINY_NLSN = ["n_resblocks=1", "n_feats=8", "chunk_size=16", "n_hashes=2", "res_scale=1.0"]
TINY_CSNLN = ["n_feats=8", "depth=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three small synthetic HR images (never the benchmark or training sets)."""
    d = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 44), (48, 36), (37, 41)]):
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        img.save(d / f"img{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def args(data, out, *extra, model="nlsn", scale=2, steps=4, patch=8, cfg=TINY_NLSN):
    return ["--model", model, "--scale", str(scale), "--out", str(out), "--data", str(data), "--cfg", *cfg,
            "--steps", str(steps), "--batch", "2", "--patch", str(patch), "--save-every", "2",
            "--log-every", "1", "--val-every", "2", "--warmup", "1", "--quiet", *map(str, extra)]


def state(out):
    return torch.load(out / train.STATE, weights_only=True)  # the state holds plain data only


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_and_writes_official_layout(data, tmp_path):
    out = tmp_path / "run"
    assert train.main(args(data, out)) == 0
    summary = json.loads((out / train.SUMMARY).read_text())
    assert summary["training"]["steps"] == 4 and summary["training"]["seed"] == 0
    assert summary["config"]["chunk_size"] == 16 and summary["sha256"] == sha256_file(out / train.WEIGHTS)
    net = models.load(out / train.WEIGHTS, chunk_size=16, n_hashes=2)  # official key layout, strict load
    assert net.name == "nlsn" and net.scale == 2 and net.config["n_feats"] == 8
    log = (out / train.LOG).read_text()
    assert "start nlsn x2" in log and "step=4" in log and "val_psnr=" in log and "done:" in log
    first = state(out)["history"][0]["loss"]
    assert np.isfinite(first)


def test_resume_is_bit_identical(data, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train.main(args(data, whole, steps=6)) == 0
    assert train.main(args(data, parts, "--stop-after", 3, steps=6)) == 0
    assert state(parts)["step"] == 3 and not (parts / train.WEIGHTS).exists()
    assert train.main(args(data, parts, steps=6)) == 0
    assert "resumed" in (parts / train.LOG).read_text()
    a, b = state(whole), state(parts)
    assert a["step"] == b["step"] == 6
    assert same_tensors(a["model"], b["model"])
    assert same_tensors(torch.load(whole / train.WEIGHTS), torch.load(parts / train.WEIGHTS))
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert same_tensors(sa, sb)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_seeded(data, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert train.main(args(data, tmp_path / name, "--seed", seed, steps=2)) == 0
        runs[name] = torch.load(tmp_path / name / train.WEIGHTS)
    assert same_tensors(runs["a"], runs["b"])
    assert not same_tensors(runs["a"], runs["c"])


def test_csnln_and_init_from(data, tmp_path):
    x2, x3 = tmp_path / "x2", tmp_path / "x3"
    assert train.main(args(data, x2, model="csnln", steps=2, patch=6, cfg=TINY_CSNLN)) == 0
    assert train.main(args(data, x3, "--init-from", x2 / train.WEIGHTS, model="csnln", scale=3, steps=2,
                           patch=6, cfg=TINY_CSNLN)) == 0
    s = json.loads((x3 / train.SUMMARY).read_text())
    assert s["training"]["init_from"] == "x2/weights.pt" and s["training"]["init_tensors"] > 0
    net = models.load(x3 / train.WEIGHTS)
    assert (net.name, net.scale, net.config["depth"]) == ("csnln", 3, 1)
    # tensors of the same shape came from x2 (the head), the x3 projections did not
    sd2 = torch.load(x2 / train.WEIGHTS)
    assert "head.0.0.weight" in sd2


def test_skip_attention_warm_start(data, tmp_path):
    out = tmp_path / "s1"
    assert train.main(args(data, out, "--skip-attention", steps=2)) == 0
    sd = torch.load(out / train.WEIGHTS)
    torch.manual_seed(0)  # the trainer's initialisation for --seed 0
    fresh = models.build("nlsn", 2, **train.parse_cfg(TINY_NLSN)).state_dict()
    # bypassed attention blocks keep their initial tensors; the rest trained
    assert torch.equal(sd["body.0.conv_match.0.weight"], fresh["body.0.conv_match.0.weight"])
    assert not torch.equal(sd["head.0.weight"], fresh["head.0.weight"])


@pytest.mark.parametrize("case,extra,needle", [
    ("nlsn patch below chunk", dict(patch=3), "chunk_size"),
    ("csnln patch not a multiple", dict(model="csnln", scale=3, patch=7, cfg=TINY_CSNLN), "--patch 7"),
    ("unknown option", dict(cfg=["n_feets=8"]), "no option n_feets"),
    ("bad cfg", dict(cfg=["n_feats"]), "NAME=VALUE"),
    ("skip attention on csnln", dict(model="csnln", patch=6, cfg=TINY_CSNLN), "only NLSN"),
    ("patch too large", dict(patch=60), "no training image"),
])
def test_refused(case, extra, needle, data, tmp_path, capsys):
    more = ["--skip-attention"] if case == "skip attention on csnln" else []
    assert train.main(args(data, tmp_path / "r", *more, **extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_resume_of_another_run_is_refused(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert train.main(args(data, out, "--stop-after", 1, steps=4)) == 0
    assert train.main(args(data, out, "--lr", "1e-3", steps=4)) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "differs in lr" in err
    assert train.main(args(data, out, "--lr", "1e-3", "--restart", steps=4)) == 0


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "0"], "--steps must be"),
    (["--data", "/no/such/folder"], "no such folder"),
    (["--init-from", "/no/such.pt"], "no such file"),
])
def test_bad_arguments(argv, needle, data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(args(data, tmp_path / "r") + argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


# ----------------------------------------------------------------------------------- API

def test_train_config_is_what_the_cli_runs(data, tmp_path):
    """The CLI only fills a TrainConfig: the same run from Python gives bit-identical weights."""
    assert train.main(args(data, tmp_path / "cli", steps=2)) == 0
    config = train.TrainConfig(model="nlsn", scale=2, out=tmp_path / "api", data=data, cfg=train.parse_cfg(TINY_NLSN),
                               steps=2, batch=2, patch=8, save_every=2, log_every=1, val_every=2, warmup=1, quiet=True)
    result = train.train(config)
    assert result["finished"] and result["step"] == 2
    assert same_tensors(torch.load(tmp_path / "cli" / train.WEIGHTS), torch.load(tmp_path / "api" / train.WEIGHTS))
    cli, api = (json.loads((tmp_path / d / train.SUMMARY).read_text()) for d in ("cli", "api"))
    assert api["val_psnr_rgb"] == cli["val_psnr_rgb"] and 0 < api["val_psnr_rgb"] < 100
    assert result["summary"]["sha256"] == cli["sha256"]


def test_cli_defaults_are_the_config_defaults(tmp_path):
    parsed = vars(train.build_parser().parse_args(["--model", "edsr", "--scale", "3", "--out", str(tmp_path)]))
    config = dataclasses.asdict(train.TrainConfig(model="edsr", scale=3, out=str(tmp_path)))
    assert {**parsed, "cfg": {}} == config


@pytest.mark.parametrize("change,needle", [
    (dict(model="srcnn"), "--model srcnn: one of csnln, edsr, nlsn"),
    (dict(scale=5), "--scale 5: one of 2, 3, 4"),
    (dict(val_every=0), "--val-every must be ≥ 1"),
    (dict(lr_min=1.0), "--lr-min must be ≤ --lr"),
    (dict(data="/no/such/folder"), "--data /no/such/folder: no such folder"),
])
def test_train_refuses_a_bad_config_before_writing(change, needle, data, tmp_path):
    config = train.TrainConfig(model="nlsn", scale=2, out=tmp_path / "r", data=data, cfg=train.parse_cfg(TINY_NLSN))
    with pytest.raises(SrdeployError, match=needle):
        train.train(dataclasses.replace(config, **change))
    assert not (tmp_path / "r").exists()
