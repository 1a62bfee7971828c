"""Checkpoint loading: round trips, detection, and an error that explains every bad file."""
import os

import pytest
import torch

import models

SMALL = {
    "nlsn": dict(n_resblocks=9, n_feats=16, res_scale=1.0),
    "csnln": dict(n_feats=16, depth=3),
    "edsr": dict(n_resblocks=3, n_feats=16, res_scale=1.0),
}


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_round_trip_detects_architecture_and_scale(tmp_path, name, scale):
    torch.manual_seed(scale)
    model = models.build(name, scale, **SMALL[name])
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = models.load(path)
    assert type(loaded) is type(model) and loaded.scale == scale
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd, "epoch": torch.tensor(3)},
    lambda sd: {"params_ema": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
], ids=["state_dict", "model", "params_ema", "module-prefix", "nested-prefix"])
def test_common_wrappers(tmp_path, wrap):
    model = models.build("edsr", 2, **SMALL["edsr"])
    torch.save(wrap(model.state_dict()), tmp_path / "w.pth")
    assert models.load(tmp_path / "w.pth").scale == 2


def test_rgb_range_read_from_mean_shift(tmp_path):
    for rgb_range in (1, 255):
        model = models.build("nlsn", 2, rgb_range=rgb_range, **SMALL["nlsn"])
        torch.save(model.state_dict(), tmp_path / "w.pt")
        assert models.load(tmp_path / "w.pt").rgb_range == rgb_range


def test_overrides_for_what_the_file_cannot_tell(tmp_path):
    torch.save(models.build("nlsn", 2, **SMALL["nlsn"]).state_dict(), tmp_path / "w.pt")
    loaded = models.load(tmp_path / "w.pt", chunk_size=64, n_hashes=2)
    assert loaded.config["chunk_size"] == 64 and loaded.config["n_hashes"] == 2


@pytest.fixture
def csnln_x2(tmp_path):
    model = models.build("csnln", 2, **SMALL["csnln"])
    path = tmp_path / "csnln_x2.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_other_architecture(csnln_x2):
    with pytest.raises(models.CheckpointError, match=r"holds a CSNLN x2 network, not NLSN; pass --model csnln"):
        models.load(csnln_x2[0], model="nlsn")


def test_other_scale(csnln_x2):
    with pytest.raises(models.CheckpointError, match=r"CSNLN x2 network, but scale x4 was asked for; pass --scale 2"):
        models.load(csnln_x2[0], scale=4)


def test_missing_and_unexpected_keys(tmp_path, csnln_x2):
    sd = dict(csnln_x2[1])
    del sd["SEM.post_conv.0.weight"]
    sd["SEM.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(models.CheckpointError, match=r"missing keys: SEM.post_conv.0.weight.*unexpected keys: SEM.extra"):
        models.load(tmp_path / "bad.pt")


def test_shape_mismatch(tmp_path, csnln_x2):
    sd = dict(csnln_x2[1])
    sd["SEM.post_conv.0.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(models.CheckpointError, match=r"shapes do not match.*SEM.post_conv.0.bias \(5,\) vs \(16,\)"):
        models.load(tmp_path / "bad.pt")


def test_pickle_needing_code_execution_is_refused(tmp_path):
    torch.save(models.build("edsr", 2, **SMALL["edsr"]), tmp_path / "whole.pt")
    with pytest.raises(models.CheckpointError, match=r"models.edsr.EDSR.*refuses.*state_dict\(\)"):
        models.load(tmp_path / "whole.pt")


@pytest.mark.parametrize("content,match", [
    (b"not a checkpoint", "not a readable PyTorch checkpoint"),
    (b"", "not a readable PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, match):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(models.CheckpointError, match=match):
        models.load(tmp_path / "x.pt")


def test_missing_file(tmp_path):
    with pytest.raises(models.CheckpointError, match="no such checkpoint file"):
        models.load(tmp_path / "nope.pt")


def test_unknown_network_and_non_tensor_dicts(tmp_path):
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(models.CheckpointError, match="match none of nlsn, csnln, edsr.*conv1.weight"):
        models.load(tmp_path / "other.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(models.CheckpointError, match="dict without tensors"):
        models.load(tmp_path / "meta.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_pickle_that_runs_code_names_the_callable(tmp_path):
    torch.save({"weight": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(models.CheckpointError) as e:
        models.load(tmp_path / "evil.pt")
    msg = str(e.value)
    assert "would run code" in msg and "os.system" in msg and "\n" not in msg
    assert "corrupt" not in msg and "another format" not in msg


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_exactly_one_architecture_claims_each_layout(name, scale):
    sd = models.build(name, scale, **SMALL[name]).state_dict()
    assert [a.name for a in models.ARCHITECTURES.values() if a.detect(sd)] == [name]
    assert models.detect(sd)[:2] == (name, scale)


@pytest.mark.parametrize("break_it,match", [
    (lambda sd: sd.pop("head.0.0.weight"), r"looks like CSNLN but lacks 'head.0.0.weight'; pass a complete"),
    (lambda sd: sd.update({"tail.0.weight": torch.zeros(3)}), r"looks like CSNLN but a tensor has an unexpected shape"),
], ids=["missing", "shape"])
def test_claimed_but_unreadable_layout(tmp_path, csnln_x2, break_it, match):
    sd = dict(csnln_x2[1])
    break_it(sd)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(models.CheckpointError, match=match) as e:
        models.load(tmp_path / "bad.pt")
    assert str(e.value).startswith(str(tmp_path / "bad.pt")) and "\n" not in str(e.value)


def test_official_key_layouts_are_detected():
    """The key layouts recorded from the official code (shared/golden) are told apart and read back."""
    import json

    import numpy as np

    from conftest import GOLDEN
    from golden import golden_weights

    files = sorted(GOLDEN.glob("*.npz"))
    if not files:
        pytest.skip(f"no golden files in {GOLDEN}")
    for path in files:
        meta = json.loads(str(np.load(path)["meta"]))
        name, scale, cfg = models.detect(golden_weights(meta))
        assert (name, scale) == (meta["model"], meta["scale"]), path.name
        assert cfg == {k: v for k, v in meta["config"].items() if k in cfg}, path.name  # what the file tells
        assert set(meta["config"]) - set(cfg) <= {"chunk_size", "n_hashes"}, path.name  # what it cannot
