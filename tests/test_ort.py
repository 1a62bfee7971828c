"""OrtBackend: a drop-in for the torch backend, driven by the metadata of the exported file."""

import onnx
import pytest
import torch

import models
from export.onnx import export_model
from models.base import InputSizeError
from export.ort import MissingCustomOpsError, custom_ops_available
from runtime.backends import OrtBackend
from runtime.metrics import psnr_peak1

needs_custom_ops = pytest.mark.skipif(not custom_ops_available(), reason="onnxruntime-extensions is not installed")
NLSN_255 = dict(n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=255)


@pytest.fixture(scope="module")
def nlsn_plugin(tmp_path_factory):
    """An NLSN x2 with the released input range (0..255), custom-op graph."""
    torch.manual_seed(0)
    model = models.build("nlsn", 2, **NLSN_255)
    path = tmp_path_factory.mktemp("ort") / "nlsn_x2_plugin.onnx"
    export_model(model, path, mode="plugin", check=False)
    return model, path


@needs_custom_ops
def test_backend_scales_by_rgb_range_and_matches_the_model(nlsn_plugin):
    model, path = nlsn_plugin
    backend = OrtBackend(path)
    assert backend.scale == 2 and backend.rgb_range == 255 and backend.meta["ops"] == "plugin"
    x = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x * 255) / 255
    got = backend(x)
    assert got.dtype == torch.float32 and got.shape == (1, 3, 12, 14)
    assert psnr_peak1(got, expected) >= 100


@needs_custom_ops
def test_valid_size_follows_the_model_rules(nlsn_plugin):
    model, path = nlsn_plugin
    backend = OrtBackend(path)
    for h, w in [(1, 1), (2, 3), (3, 5), (4, 4), (1, 40), (7, 9)]:
        assert backend.valid_size(h, w) == model.valid_size(h, w)
    # a small input padded up to its valid size runs (the runtime's pad-and-crop)
    vh, vw = backend.valid_size(2, 3)
    x = torch.rand(1, 3, vh, vw)
    with torch.no_grad():
        assert psnr_peak1(backend(x), model(x * 255) / 255) >= 100
    with pytest.raises(InputSizeError, match="pad the input to"):
        backend(torch.rand(1, 3, 2, 3))


def test_backend_without_custom_ops_names_them(nlsn_plugin):
    _, path = nlsn_plugin
    with pytest.raises(MissingCustomOpsError) as e:
        OrtBackend(path, custom_ops=False)
    msg = str(e.value)
    assert "srdeploy::BucketAttention, srdeploy::BucketSort" in msg
    assert "export with --ops onnx or install onnxruntime-extensions" in msg


def test_file_without_metadata(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
    with pytest.raises(ValueError, match="no srdeploy metadata"):
        OrtBackend(path)
    with pytest.raises(FileNotFoundError, match="export one with python -m export.onnx"):
        OrtBackend(tmp_path / "missing.onnx")


def test_cuda_without_provider_is_a_clear_error(nlsn_plugin):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        OrtBackend(nlsn_plugin[1], device="cuda")


def test_open_exports_a_checkpoint_on_the_fly(tmp_path):
    torch.manual_seed(0)
    net = models.build("edsr", 3, n_resblocks=1, n_feats=8)
    weights = tmp_path / "edsr_x3.pt"
    torch.save(net.state_dict(), weights)
    backend = OrtBackend.open(weights, model="edsr", scale=3)
    assert (backend.name, backend.scale, backend.rgb_range, backend.meta["ops"]) == ("edsr", 3, 255, "onnx")
    x = torch.rand(1, 3, 5, 6)
    loaded = models.load(weights)  # what the file says (res_scale is not in it: the loader's rule)
    with torch.no_grad():
        assert psnr_peak1(backend(x), loaded(x * 255) / 255) >= 100
    with pytest.raises(ValueError, match="--scale 2 does not match .*, which holds edsr x3; drop --scale"):
        OrtBackend.open(backend.path, scale=2)
