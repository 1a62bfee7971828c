"""Per op, the standard-ONNX decomposition in PyTorch against the reference of models/ops, the custom-op
schemas and the errors that name missing custom ops. The one-op graphs on onnxruntime (decomposition and
custom op) are rows of the op × backend table, tests/test_op_backends.py."""
import onnx
import pytest
import torch

import models  # noqa: F401  (registers torch.ops.srdeploy)
from benchmarks import op_cases
from export import ops_onnx, ops_plugin
from export.ort import MissingCustomOpsError, make_session
from models import ops as ref
from runtime.metrics import psnr_peak1
from test_op_backends import one_op_graph


# ----------------------------------------------------------------------------- decompositions in PyTorch

@pytest.mark.parametrize("B,M,buckets", [(1, 1, 1), (2, 600, 8), (3, 4 * 4096, 4 * 128), (2, 1000, 2), (1, 3000, 1000)])
def test_bucket_sort_decomposition_is_the_stable_sort(B, M, buckets):
    codes = op_cases.sort_inputs(B, M, buckets, seed=M, device="cpu")
    order, rank = ops_onnx.bucket_sort(codes, buckets)
    expected = ref.bucket_sort_reference(codes, buckets)
    assert order.dtype == rank.dtype == torch.int32
    assert torch.equal(order, expected[0]) and torch.equal(rank, expected[1])


def test_bucket_sort_decomposition_with_a_bound_larger_than_the_count():
    codes = op_cases.sort_inputs(2, 500, 6, seed=1, device="cpu")
    for bound in (6, 40, 1024):
        assert all(torch.equal(a, b) for a, b in zip(ops_onnx.bucket_sort(codes, 6, max_buckets=bound),
                                                     ref.bucket_sort_reference(codes, 6)))


@pytest.mark.parametrize("N,L,c,C,cs,R", [(2, 40, 4, 16, 16, 2), (1, 48, 4, 8, 16, 2), (1, 16, 4, 8, 16, 3),
                                          (2, 100, 8, 8, 7, 4), (1, 31, 3, 5, 16, 1)])
@pytest.mark.parametrize("peaky", [False, True], ids=["flat", "peaky"])
def test_bucket_attention_decomposition(N, L, c, C, cs, R, peaky):
    q, v, order, rank = op_cases.sorted_attention_inputs(N, 1, L, c, C, cs, R, seed=L, device="cpu", peaky=peaky)
    got = ops_onnx.bucket_attention(q, v, order, rank, cs, R, op_cases.KEY_EPS)
    expected = ref.bucket_attention_reference(q, v, order, rank, cs, R, op_cases.KEY_EPS)
    assert psnr_peak1(got, expected) >= 120


@pytest.mark.parametrize("N,K,C,H,W,k,s,p", [(2, 12, 5, 3, 4, 6, 2, 2), (1, 9, 4, 3, 3, 9, 3, 3), (2, 6, 3, 2, 3, 5, 2, 1)])
def test_cross_scale_fold_decomposition(N, K, C, H, W, k, s, p):
    scores, patches = op_cases.fold_inputs(N, H, W, C, s, K=K, k=k, seed=k, device="cpu")
    got = ops_onnx.cross_scale_fold(scores, patches, s, p)
    expected = ref.cross_scale_fold_reference(scores, patches, s, p)
    assert got.shape == expected.shape and psnr_peak1(got, expected) >= 120


def test_conv_with_computed_weights_as_matmul():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 8, 7, 9, generator=g), torch.randn(10, 4, 3, 3, generator=g), torch.randn(10, generator=g)
    got = ops_onnx.conv2d_as_matmul(x, w, b, [1, 1], [1, 1], [1, 1], 2)
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, b, padding=1, groups=2), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- errors and schemas

def test_missing_custom_ops_are_named(tmp_path_factory):
    _, path, _ = one_op_graph("CrossScaleFold", "plugin", tmp_path_factory)
    with pytest.raises(MissingCustomOpsError, match=r"srdeploy::CrossScaleFold.*--ops onnx or install onnxruntime-extensions"):
        make_session(path, custom_ops=False)


def test_unknown_custom_ops_are_named():
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Warp", ["x"], ["y"], domain="acme")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("acme", 1)])
    with pytest.raises(MissingCustomOpsError, match=r"acme::Warp; export with --ops onnx$"):
        make_session(model)


def test_schemas_infer_shapes():
    ops_plugin.register_schemas()
    from onnx import TensorProto, helper
    node = helper.make_node("CrossScaleFold", ["s", "p"], ["y"], domain="srdeploy", stride=2, padding=2)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT16, [1, 12, 3, 4]),
                                            helper.make_tensor_value_info("p", TensorProto.FLOAT16, [1, 12, 5, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("srdeploy", 1)])
    out = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type
    assert out.elem_type == TensorProto.FLOAT16 and [d.dim_value for d in out.shape.dim] == [1, 5, 6, 8]
