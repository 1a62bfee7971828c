"""Reference networks: construction, size rules, deployment semantics (DESIGN.md §2)."""
import pytest
import torch
import torch.nn.functional as F

import models
from models.csnln import downscale
from models.nlsn import num_buckets

SMALL = {
    "nlsn": dict(n_resblocks=2, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1),
    "csnln": dict(n_feats=16, depth=2, rgb_range=1),
    "edsr": dict(n_resblocks=2, n_feats=16, rgb_range=1),
}


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_and_batch_independence(name, scale):
    torch.manual_seed(0)
    model = models.build(name, scale, **SMALL[name])
    h, w = model.valid_size(12, 18)
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        both = model(x)
        single = torch.cat([model(x[:1]), model(x[1:])])
    assert both.shape == (2, 3, scale * h, scale * w)
    # batched attention (CSNLN) and bucketed attention (NLSN) must not mix samples
    torch.testing.assert_close(both, single, rtol=1e-5, atol=1e-5)


def test_released_defaults():
    assert models.build("nlsn", 4).config == dict(n_resblocks=32, n_feats=256, res_scale=0.1, chunk_size=144,
                                                  n_hashes=4, rgb_range=255, n_colors=3, lsh_seed=0)
    nlsn = models.build("nlsn", 2)
    assert len(nlsn.attention_blocks()) == 5  # one first, then one after every 8 res-blocks
    assert models.build("csnln", 2).config["depth"] == 12
    edsr = models.build("edsr", 2)
    assert edsr.config["n_feats"] == 256 and edsr.config["n_resblocks"] == 32


@pytest.mark.parametrize("bad,match", [
    (dict(name="srcnn", scale=2), "unknown model"),
    (dict(name="nlsn", scale=5), "scale 5"),
    (dict(name="edsr", scale=2, chunk_size=4), "no option chunk_size"),
])
def test_build_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        models.build(**bad)


def test_nlsn_rejects_too_small_input():
    model = models.build("nlsn", 2, **SMALL["nlsn"])  # chunk 16: needs H·W ≥ 16
    with pytest.raises(models.InputSizeError, match="at least 16 input pixels"):
        model(torch.rand(1, 3, 3, 5))
    assert model.valid_size(3, 5) == (4, 5)
    assert model(torch.rand(1, 3, 4, 5)).shape == (1, 3, 8, 10)
    assert models.build("nlsn", 2).valid_size(11, 11) == (12, 12)


@pytest.mark.parametrize("scale,u", [(2, 2), (3, 3), (4, 2)])
def test_csnln_requires_multiple_of_up_factor(scale, u):
    model = models.build("csnln", scale, **SMALL["csnln"])
    assert model.size_multiple == u
    with pytest.raises(models.InputSizeError, match=f"divisible by {u}"):
        model(torch.rand(1, 3, 2 * u + 1, 2 * u))
    assert model.valid_size(2 * u + 1, 2 * u) == (3 * u, 2 * u)


@pytest.mark.parametrize("u", [2, 3])
def test_csnln_downscale_is_bilinear(u):
    x = torch.rand(2, 3, 6 * u, 4 * u, dtype=torch.float64)
    bilinear = F.interpolate(x, scale_factor=1.0 / u, mode="bilinear", align_corners=False)
    torch.testing.assert_close(downscale(x, u), bilinear)


def test_num_buckets_rule():
    assert num_buckets(576, 144) == 4
    assert num_buckets(299, 144) == 2
    assert num_buckets(144 * 3, 144) == 4  # odd counts round up to even
    assert num_buckets(10 ** 6, 144) == 128


def test_lsh_rotations_fixed_seeded_and_not_in_state_dict():
    cfg = {**SMALL["nlsn"], "n_resblocks": 8}  # two attention blocks
    a = models.build("nlsn", 2, **cfg)
    b = models.build("nlsn", 2, **cfg)
    c = models.build("nlsn", 2, lsh_seed=1, **cfg)
    ra = [blk.rotations for blk in a.attention_blocks()]
    assert ra[0].shape == (4, 2, 64)
    assert all(torch.equal(x, y.rotations) for x, y in zip(ra, b.attention_blocks()))
    assert not any(torch.equal(x, y.rotations) for x, y in zip(ra, c.attention_blocks()))
    assert not torch.equal(ra[0], ra[1])  # each block its own draw
    assert not any("rotations" in k for k in a.state_dict())
    # same input, two calls: identical (the official code redraws every call)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(a(x), a(x))


def test_rotations_stay_fp32_under_half():
    model = models.build("nlsn", 2, **SMALL["nlsn"])
    before = model.attention_blocks()[0].rotations.clone()
    model.half()
    after = model.attention_blocks()[0].rotations
    assert after.dtype == torch.float32 and torch.equal(before, after)
    assert model.head[0].weight.dtype == torch.float16


def test_training_step_backpropagates_through_custom_ops():
    for name in ("nlsn", "csnln"):
        model = models.build(name, 2, **SMALL[name]).train()
        x = torch.rand(1, 3, 8, 8)
        loss = model(x).abs().mean()
        loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if "conv_match" in n and p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), name


# ----------------------------------------------------------------------------- descriptions (models.base.Architecture)

@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_each_network_answers_from_its_description(name, scale):
    from runtime import tiling

    arch = models.architecture(name.upper())
    assert arch is models.ARCHITECTURES[name] and arch.name == name
    model = models.build(name, scale, **SMALL[name])
    assert type(model) is arch.model and model.architecture is arch
    rule = arch.size_rule(scale, model.config)  # what the runtime may ask before building anything
    assert (model.size_multiple, model.min_pixels()) == (rule.multiple, rule.min_pixels)
    for h, w in [(1, 1), (5, 7), (12, 18), (13, 13)]:
        assert model.valid_size(h, w) == rule.valid_size(h, w)
        vh, vw = rule.valid_size(h, w)
        model.check_size(vh, vw)  # the sizes the rule hands out are accepted
    assert tiling.chop_rule(name) is arch.chop


def test_unknown_architecture_is_one_usage_error():
    from models.errors import UsageError
    from runtime import tiling

    for ask in (lambda: models.architecture("srcnn"), lambda: tiling.chop_rule("srcnn")):
        with pytest.raises(UsageError, match=r"unknown model 'srcnn'; choose one of nlsn, csnln, edsr"):
            ask()


@pytest.mark.parametrize("name", list(SMALL))
def test_fp16_hint_holds(name):
    """A network whose description says fp16 runs in half precision within the fp16 floor (45 dB)."""
    from runtime.metrics import psnr_peak1

    assert models.architecture(name).hints.fp16
    torch.manual_seed(0)
    model = models.build(name, 2, **SMALL[name])
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        full = model(x)
        half = model.half()(x.half()).float()
    assert torch.isfinite(half).all() and psnr_peak1(half, full) >= 45.0


def test_memory_hints_match_the_runtime_calibration():
    """runtime.memory reads its per-architecture calibration from the descriptions' hints."""
    from runtime import memory

    for name, arch in models.ARCHITECTURES.items():
        assert arch.hints.feature_maps == memory.FEATURE_MAPS[name], name
        assert arch.hints.dense_attention == (name == "csnln"), name  # runtime.memory models only CSNLN as dense
