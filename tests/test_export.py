"""python -m export.onnx: every model × scale × mode exports, runs in onnxruntime at several sizes from
one dynamic file at ≥ 100 dB against PyTorch, and holds exactly the nodes its mode promises."""

import numpy as np
import onnx
import pytest
import torch

import models
from export import cleanup, metadata, ops_plugin
from export import onnx as export_onnx
from export.onnx import ExportError, export_model, main
from export.ort import custom_ops_available
from models.ops.contract import OPS
from runtime.backends import OrtBackend
from runtime.metrics import psnr_peak1

SMALL = {
    "nlsn": dict(n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1),
    "csnln": dict(n_feats=16, depth=1, rgb_range=1),
    "edsr": dict(n_resblocks=1, n_feats=8, rgb_range=1),
}
# Input sizes per model, all from one dynamic file. NLSN (chunk 16): 4x8 and 8x6 have L % 16 == 0
# (no padding; 4x8 is one chunk pair), 5x7 and 9x11 take the copy-tail padding path.
# CSNLN: multiples of the up-factor u. The (batch 2) entry checks the batch axis.
SIZES = {
    "nlsn": [(1, 4, 8), (1, 5, 7), (2, 8, 6), (1, 9, 11)],
    "csnln": [(1, 2, 3), (2, 3, 2), (1, 4, 5)],  # in units of u
    "edsr": [(1, 3, 11), (2, 8, 8), (1, 5, 7)],
}


def small_model(name, scale):
    torch.manual_seed(0)
    return models.build(name, scale, **SMALL[name])


_CACHE = {}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(name, scale, mode[, precision]) -> (model, path): each file exported once per test session."""
    root = tmp_path_factory.mktemp("exports")

    def get(name, scale, mode, precision="fp32"):
        key = (name, scale, mode, precision)
        if key not in _CACHE:
            model = small_model(name, scale)
            path = root / f"{name}_x{scale}_{mode}_{precision}.onnx"
            result = export_model(model, path, mode=mode, precision=precision, check=False)
            _CACHE[key] = (model, path, result)
        return _CACHE[key][:2]

    return get


def expected_custom_nodes(model, name):
    """op -> (count, attributes) the contract of DESIGN.md §3 asks for."""
    if name == "nlsn":
        blocks = model.attention_blocks()
        cfg = model.config
        attrs_sort = {"num_buckets": cfg["n_hashes"] * 128}  # dynamic file: the bound n_hashes · 128
        attrs_attn = {"chunk_size": cfg["chunk_size"], "n_hashes": cfg["n_hashes"], "eps": pytest.approx(5e-5)}
        return {"BucketSort": (len(blocks), attrs_sort), "BucketAttention": (len(blocks), attrs_attn)}
    if name == "csnln":
        u = model.size_multiple
        per_step = 2 if model.scale == 4 else 1
        return {"CrossScaleFold": (per_step * model.depth, {"stride": u, "padding": u})}
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["onnx", "plugin"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["nlsn", "csnln", "edsr"])
def test_export_runs_at_several_sizes_from_one_file(exported, name, scale, mode):
    model, path = exported(name, scale, mode)
    proto = onnx.load(str(path))
    cleanup.check(proto)
    if mode == "onnx":
        assert cleanup.trt_violations(proto) == []
    else:
        nodes = ops_plugin.custom_nodes(proto)
        got = {}
        for n in nodes:
            assert n.domain == "srdeploy"
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert set(attrs) == {a.name for a in OPS[n.op_type].attributes}
            count, first = got.get(n.op_type, (0, attrs))
            assert attrs == first  # every node of one op carries the same attributes
            got[n.op_type] = (count + 1, attrs)
        assert got == expected_custom_nodes(model, name)
        # Nothing else stands between the graph and TensorRT (plus the plugins).
        assert [v for v in cleanup.trt_violations(proto) if "custom domain" not in v] == []
        if not custom_ops_available():
            pytest.skip("onnxruntime-extensions is not installed: the custom-op graph cannot run on CPU")
    backend = OrtBackend(path)
    u = model.size_multiple
    for n, h, w in SIZES[name]:
        h, w = (h * u, w * u) if name == "csnln" else (h, w)
        assert backend.valid_size(h, w) == model.valid_size(h, w) == (h, w)
        x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
        with torch.no_grad():
            expected = model(x)
        got = backend(x)
        assert got.shape == expected.shape
        assert psnr_peak1(got, expected) >= 100, f"{name} x{scale} --ops {mode} at {n}x3x{h}x{w}"


@pytest.mark.parametrize("mode", ["onnx", "plugin"])
def test_fixed_size_export_and_its_size_rule(tmp_path, mode):
    model = small_model("nlsn", 2)
    path = tmp_path / "fixed.onnx"
    result = export_model(model, path, mode=mode, size=(6, 8), check=mode == "onnx" or custom_ops_available())
    proto = onnx.load(str(path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 6, 8]
    if mode == "plugin":  # a fixed size knows its bucket count: 6·8 = 48 positions, chunk 16 -> 4 per round
        (sort,) = [n for n in proto.graph.node if n.op_type == "BucketSort"]
        assert onnx.helper.get_attribute_value(sort.attribute[0]) == 2 * 4
        if not custom_ops_available():
            return
    assert result.checks["max_abs_diff"] < 1e-5
    backend = OrtBackend(path)
    assert backend.valid_size(5, 7) == (6, 8)
    with pytest.raises(ValueError, match="6x8 inputs only"):
        backend.valid_size(7, 7)
    x = torch.rand(1, 3, 6, 8)
    with torch.no_grad():
        assert psnr_peak1(backend(x), model(x)) >= 100


def _tensor_types(proto):
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in proto.graph.initializer})
    return types


FP16_CASES = [("nlsn", 2, "onnx"), ("csnln", 2, "plugin")]  # the plugin case also runs the fp32 casts


@pytest.mark.slow
@pytest.mark.parametrize("name,scale,mode", FP16_CASES)
def test_fp16_graph_keeps_hashing_and_softmax_in_fp32(exported, name, scale, mode):
    model, path = exported(name, scale, mode, "fp16")
    proto = onnx.load(str(path))
    cleanup.check(proto)
    types = _tensor_types(proto)
    F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[0]] == F16 for n in convs)  # the network runs in fp16
    for n in proto.graph.node:
        if n.op_type in ("ArgMax", "Softmax", "ReduceLogSumExp", "CumSum"):  # hashing, softmax statistics
            assert types[n.input[0]] == F32, f"{n.op_type} {n.name} is not fp32"
    assert [proto.graph.input[0].type.tensor_type.elem_type, proto.graph.output[0].type.tensor_type.elem_type] == [F32, F32]


def _real_image_lr(scale, size, multiple):
    from PIL import Image
    from runtime.resize import bicubic_downscale_uint8
    from conftest import DATA
    hr_path = DATA / "benchmark" / "Set5" / "HR" / "butterfly.png"
    if not hr_path.is_file():
        pytest.skip(f"real images not found under {DATA}")
    hr = np.asarray(Image.open(hr_path).convert("RGB"))
    lr = bicubic_downscale_uint8(hr, scale)
    h, w = (s // multiple * multiple for s in size)
    return torch.from_numpy(lr[:h, :w].astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name,scale,mode", FP16_CASES)
def test_fp16_parity_on_a_real_image(exported, name, scale, mode):
    """fp16 end to end vs the fp32 reference ≥ 45 dB (DESIGN.md §5). onnxruntime's CPU provider runs the
    fp16 graph, computing in fp32 the ops it has no fp16 kernel for (and our CPU custom ops are fp32):
    a GPU provider is the real fp16 measurement (benchmarks.parity on a GPU machine)."""
    if mode == "plugin" and not custom_ops_available():
        pytest.skip("onnxruntime-extensions is not installed")
    model, path = exported(name, scale, mode, "fp16")
    x = _real_image_lr(scale, (36, 48), model.size_multiple)
    with torch.no_grad():
        expected = model(x)
    got = OrtBackend(path)(x)
    assert psnr_peak1(got.clamp(0, 1), expected.clamp(0, 1)) >= 45


# ----------------------------------------------------------------------------- bad input

def run_cli(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_unknown_model(capsys, tmp_path):
    code, err = run_cli(capsys, "--model", "srcnn", "--scale", "2", "-o", str(tmp_path / "x.onnx"))
    assert code == 2 and "unknown model 'srcnn'" in err and "nlsn" in err


def test_cli_weights_of_another_scale(capsys, tmp_path):
    weights = tmp_path / "edsr_x2.pt"
    torch.save(small_model("edsr", 2).state_dict(), weights)
    code, err = run_cli(capsys, "--model", "edsr", "--scale", "3", "--weights", str(weights),
                        "-o", str(tmp_path / "x.onnx"))
    assert code == 2 and "x2" in err and "--scale 2" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("mode", ["onnx", "plugin"])
def test_cli_opset_too_low(capsys, tmp_path, mode):
    code, err = run_cli(capsys, "--model", "edsr", "--scale", "2", "--set", "n_feats=8", "--set", "n_resblocks=1",
                        "--ops", mode, "--opset", "13", "-o", str(tmp_path / "x.onnx"))
    assert code == 2 and f"opset 13 is too low for --ops {mode}" in err and "--opset 18" in err


def test_cli_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"keep me")
    code, err = run_cli(capsys, "--model", "edsr", "--scale", "2", "--set", "n_feats=8", "--set", "n_resblocks=1",
                        "-o", str(out))
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"


def test_cli_writes_and_summarises(capsys, tmp_path):
    out = tmp_path / "edsr.onnx"
    out.write_bytes(b"old")
    code = main(["--model", "edsr", "--scale", "2", "--set", "n_feats=8", "--set", "n_resblocks=1",
                 "--ops", "onnx", "-o", str(out), "--overwrite"])
    text = capsys.readouterr().out
    assert code == 0 and out.stat().st_size > 1000
    assert "input  input: float32 [batch, 3, height, width]" in text
    assert "output output: float32 [batch, 3, 2*height, 2*width]" in text
    assert "custom: none" in text and "onnxruntime" in text
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is gone
    meta = metadata.read_file(out)
    assert meta["model"] == "edsr" and meta["scale"] == 2 and meta["rgb_range"] == 255 and meta["fixed_size"] is None


def test_invalid_fixed_size_is_refused(tmp_path):
    with pytest.raises(ExportError, match="--size 12x12"):
        export_model(small_model("csnln", 3), tmp_path / "x.onnx", size=(10, 12))


def test_weights_default_to_the_bundled_ones():
    from models import weights as bundled
    entry = bundled.find("nlsn", 2)
    model, desc = export_onnx.load_model("nlsn", 2, None, {})
    if entry is None:
        assert desc is None
    else:
        assert desc == f"bundled {entry.path.name}" and model.config["n_feats"] == entry.config["n_feats"]
    # an architecture option, or --random-weights, means random weights of that configuration
    assert export_onnx.load_model("nlsn", 2, None, {"n_feats": 16, "n_resblocks": 1})[1] is None
    assert export_onnx.load_model("nlsn", 2, None, {}, random_weights=True)[1] is None
