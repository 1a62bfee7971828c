"""Per op: the standard-ONNX decomposition (in PyTorch, then as an ONNX graph in onnxruntime) and the
onnxruntime custom-op implementation, each against the PyTorch reference of models/ops.py."""
import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.export import Dim

import models  # noqa: F401  (registers torch.ops.srdeploy)
from export import cleanup, ops_onnx, ops_plugin
from export.onnx import to_onnx
from models import ops as ref
from export.ort import MissingCustomOpsError, custom_ops_available, make_session
from models.ops.contract import OPS

needs_custom_ops = pytest.mark.skipif(not custom_ops_available(), reason="onnxruntime-extensions is not installed")


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def nlsn_codes(N, L, cs, R, seed):
    """Round-offset hash codes as NLSN makes them, and the bucket count."""
    hb = min(L // cs + (L // cs) % 2, 128)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, hb, (N, R, L), generator=g) + torch.arange(R).view(1, -1, 1) * hb
    return codes.reshape(N, -1).to(torch.int32), R * hb


def attention_inputs(N, L, c, C, cs, R, seed):
    g = torch.Generator().manual_seed(seed)
    q, v = torch.randn(N, L, c, generator=g), torch.randn(N, L, C, generator=g)
    codes, nb = nlsn_codes(N, L, cs, R, seed)
    order, rank = ref.bucket_sort_reference(codes, nb)
    return q, v, order, rank


def fold_inputs(N, K, C, H, W, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(N, K, H, W, generator=g), 1), torch.randn(N, K, C, k, k, generator=g)


# ----------------------------------------------------------------------------- decompositions in PyTorch

@pytest.mark.parametrize("B,M,buckets", [(1, 1, 1), (2, 600, 8), (3, 4 * 4096, 4 * 128), (2, 1000, 2), (1, 3000, 1000)])
def test_bucket_sort_decomposition_is_the_stable_sort(B, M, buckets):
    codes = torch.randint(0, buckets, (B, M), dtype=torch.int32, generator=torch.Generator().manual_seed(M))
    order, rank = ops_onnx.bucket_sort(codes, buckets)
    expected = ref.bucket_sort_reference(codes, buckets)
    assert order.dtype == rank.dtype == torch.int32
    assert torch.equal(order, expected[0]) and torch.equal(rank, expected[1])


def test_bucket_sort_decomposition_with_a_bound_larger_than_the_count():
    codes = torch.randint(0, 6, (2, 500), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    for bound in (6, 40, 1024):
        assert all(torch.equal(a, b) for a, b in zip(ops_onnx.bucket_sort(codes, 6, max_buckets=bound),
                                                     ref.bucket_sort_reference(codes, 6)))


@pytest.mark.parametrize("N,L,c,C,cs,R", [(2, 40, 4, 16, 16, 2), (1, 48, 4, 8, 16, 2), (1, 16, 4, 8, 16, 3),
                                          (2, 100, 8, 8, 7, 4), (1, 31, 3, 5, 16, 1)])
def test_bucket_attention_decomposition(N, L, c, C, cs, R):
    q, v, order, rank = attention_inputs(N, L, c, C, cs, R, seed=L)
    got = ops_onnx.bucket_attention(q, v, order, rank, cs, R, 5e-5)
    expected = ref.bucket_attention_reference(q, v, order, rank, cs, R, 5e-5)
    assert psnr(got, expected) >= 120


@pytest.mark.parametrize("N,K,C,H,W,k,s,p", [(2, 12, 5, 3, 4, 6, 2, 2), (1, 9, 4, 3, 3, 9, 3, 3), (2, 6, 3, 2, 3, 5, 2, 1)])
def test_cross_scale_fold_decomposition(N, K, C, H, W, k, s, p):
    scores, patches = fold_inputs(N, K, C, H, W, k, seed=k)
    got = ops_onnx.cross_scale_fold(scores, patches, s, p)
    expected = ref.cross_scale_fold_reference(scores, patches, s, p)
    assert got.shape == expected.shape and psnr(got, expected) >= 120


def test_conv_with_computed_weights_as_matmul():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 8, 7, 9, generator=g), torch.randn(10, 4, 3, 3, generator=g), torch.randn(10, generator=g)
    got = ops_onnx.conv2d_as_matmul(x, w, b, [1, 1], [1, 1], [1, 1], 2)
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, b, padding=1, groups=2), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- single-op ONNX graphs

class SortOp(nn.Module):
    def __init__(self, buckets):
        super().__init__()
        self.buckets = buckets

    def forward(self, codes):
        return torch.ops.srdeploy.bucket_sort(codes, self.buckets)


class AttentionOp(nn.Module):
    def __init__(self, cs, R):
        super().__init__()
        self.cs, self.R = cs, R

    def forward(self, q, v, order, rank):
        return torch.ops.srdeploy.bucket_attention(q, v, order, rank, self.cs, self.R, 5e-5)


class FoldOp(nn.Module):
    def __init__(self, s, p):
        super().__init__()
        self.s, self.p = s, p

    def forward(self, scores, patches):
        return torch.ops.srdeploy.cross_scale_fold(scores, patches, self.s, self.p)


CS, R = 16, 2


def op_graphs():
    """op -> (module, example inputs, dynamic shapes, input names, output names, cases at other sizes)."""
    L = Dim("L", min=CS)
    M = Dim("M", min=2)
    K, H, W = Dim("K", min=2), Dim("H", min=2), Dim("W", min=2)
    N = Dim("N", min=1)  # the examples have batch 2 (a size-1 example would fix the axis to 1)
    return {
        "BucketSort": (SortOp(256), (nlsn_codes(2, 40, CS, R, 0)[0],), ({0: N, 1: M},), ["codes"], ["order", "rank"],
                       [(nlsn_codes(1, 37, CS, R, 1)[0],), (nlsn_codes(3, 300, CS, R, 2)[0],)]),
        "BucketAttention": (AttentionOp(CS, R), attention_inputs(2, 40, 4, 8, CS, R, 0),
                            ({0: N, 1: L}, {0: N, 1: L}, {0: N, 1: R * L}, {0: N, 1: R * L}),
                            ["q", "v", "order", "rank"], ["out"],
                            [attention_inputs(1, 48, 4, 8, CS, R, 1), attention_inputs(3, 37, 4, 8, CS, R, 2),
                             attention_inputs(1, 16, 4, 8, CS, R, 3)]),
        "CrossScaleFold": (FoldOp(2, 2), fold_inputs(2, 12, 4, 3, 4, 6, 0),
                           ({0: N, 1: K, 2: H, 3: W}, {0: N, 1: K}), ["scores", "patches"], ["out"],
                           [fold_inputs(1, 20, 4, 4, 5, 6, 1), fold_inputs(3, 6, 4, 2, 3, 6, 2)]),
    }


_GRAPHS = {}


def op_graph(op, mode, tmp_path_factory):
    if (op, mode) not in _GRAPHS:
        module, example, dyn, ins, outs, cases = op_graphs()[op]
        proto = to_onnx(module, example, mode=mode, dynamic_shapes=dyn, input_names=ins, output_names=outs)
        path = tmp_path_factory.mktemp("ops") / f"{op}_{mode}.onnx"
        onnx.save(proto, path)
        _GRAPHS[op, mode] = (proto, path, module, [example, *cases], ins)
    return _GRAPHS[op, mode]


def run_and_compare(session, module, cases, names):
    for inputs in cases:
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape) and g.dtype == e.numpy().dtype
            if e.dtype == torch.int32:
                np.testing.assert_array_equal(g, e.numpy())
            else:
                assert psnr(g, e.numpy()) >= 100


@pytest.mark.parametrize("op", list(OPS))
def test_onnx_decomposition_in_onnxruntime(op, tmp_path_factory):
    proto, path, module, cases, names = op_graph(op, "onnx", tmp_path_factory)
    cleanup.check(proto)
    assert cleanup.trt_violations(proto) == []
    assert not any(n.op_type in ("TopK", "Col2Im", "Sort") for n in proto.graph.node)
    run_and_compare(make_session(path), module, cases, names)


@needs_custom_ops
@pytest.mark.parametrize("op", list(OPS))
def test_custom_op_in_onnxruntime(op, tmp_path_factory):
    proto, path, module, cases, names = op_graph(op, "plugin", tmp_path_factory)
    cleanup.check(proto)
    (node,) = ops_plugin.custom_nodes(proto)
    assert (node.domain, node.op_type) == ("srdeploy", op)
    assert {a.name for a in node.attribute} == {a.name for a in OPS[op].attributes}
    run_and_compare(make_session(path), module, cases, names)


def test_missing_custom_ops_are_named(tmp_path_factory):
    _, path, *_ = op_graph("CrossScaleFold", "plugin", tmp_path_factory)
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
