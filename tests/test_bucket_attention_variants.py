"""The BucketAttention kernel variant switch of the C ABI, on CPU (nothing here launches a kernel):
SRDEPLOY_BUCKET_ATTENTION is read at every srd_bucket_attention call (gather, the default, or
chunk); an unknown value is SRD_ERR_INVALID_ATTRIBUTE naming the valid ones; the workspace size
query covers both variants whatever the variable says. Parity and speed of the two variants
need a GPU (tests/test_kernels_gpu.py, scripts/gpu_check.sh); their tiling is checked in float64
by tests/test_kernel_emulation.py."""
import ctypes

import pytest

from plugins import kernels

VARIANT_ENV = "SRDEPLOY_BUCKET_ATTENTION"
S = {name: code for code, name in kernels.STATUS.items()}
F32, F16 = 0, 1
FAKE = 0x1000  # a non-NULL pointer that validation never dereferences


@pytest.fixture(scope="module")
def lib(built_library):
    """The kernels library of the session (the C ABI is the same for every architecture)."""
    return kernels.load(built_library).lib


def up(x):
    return -(-x // 256) * 256


def gather_workspace_bytes(n, L, c, C, cs, R):
    """bucketAttentionWorkspaceSize: fp32 norms, per-round outputs, logsumexps."""
    return up(4 * n * L) + up(4 * n * R * L * C) + up(4 * n * R * L)


def chunk_workspace_bytes(n, L, c, C, cs, R, dtype):
    """bucketAttentionChunkWorkspaceSize: sorted queries, keys (rows of c rounded up to 16 halves
    or 4 floats) and values (C rounded up to 16 bytes) for every padded row of every round, then
    per-round outputs in the element type and fp32 logsumexps."""
    elem = 2 if dtype == F16 else 4
    ld_q = -(-c // (16 if dtype == F16 else 4)) * (16 if dtype == F16 else 4)
    ld_v = -(-C // (16 // elem)) * (16 // elem)
    lp = -(-L // cs) * cs
    sorted_rows, round_rows = n * R * lp, n * R * L
    return (2 * up(sorted_rows * ld_q * elem) + up(sorted_rows * ld_v * elem) + up(round_rows * ld_v * elem)
            + up(round_rows * 4))


def workspace_size(lib, shape, dtype):
    size = ctypes.c_size_t(123)
    status = lib.srd_bucket_attention_workspace_size(*shape, dtype, ctypes.byref(size))
    assert status == S["SRD_SUCCESS"], lib.srd_last_error_message()
    return size.value


def call(lib, shape, dtype=F32, ws_bytes=0):
    return lib.srd_bucket_attention(FAKE, FAKE, FAKE, FAKE, FAKE, *shape, 5e-5, dtype, FAKE, ws_bytes, None)


SHAPES = [(1, 128 * 128, 64, 256, 144, 4), (2, 100, 7, 13, 9, 3), (1, 37, 67, 203, 37, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [F32, F16])
def test_workspace_covers_both_variants_whatever_the_variable(lib, monkeypatch, shape, dtype):
    expected = max(gather_workspace_bytes(*shape), chunk_workspace_bytes(*shape, dtype))
    for value in (None, "gather", "chunk", "no-such-variant"):
        if value is None:
            monkeypatch.delenv(VARIANT_ENV, raising=False)
        else:
            monkeypatch.setenv(VARIANT_ENV, value)
        assert workspace_size(lib, shape, dtype) == expected


def test_unknown_variant_is_an_invalid_attribute_naming_the_valid_ones(lib, monkeypatch):
    shape = SHAPES[1]
    need = workspace_size(lib, shape, F32)
    monkeypatch.setenv(VARIANT_ENV, "flash")
    assert call(lib, shape, ws_bytes=need) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    message = lib.srd_last_error_message().decode()
    assert VARIANT_ENV in message and "flash" in message and "gather" in message and "chunk" in message
    monkeypatch.setenv(VARIANT_ENV, "Chunk")  # exact names only
    assert call(lib, shape, ws_bytes=need) == S["SRD_ERR_INVALID_ATTRIBUTE"]


@pytest.mark.parametrize("value", [None, "", "gather", "chunk"])
def test_valid_variants_pass_on_to_the_workspace_check(lib, monkeypatch, value):
    """The variable is read at every call, in this process: a valid value lets validation go on
    (here to the workspace check, before anything touches a GPU), right after an invalid one."""
    shape = SHAPES[1]
    need = workspace_size(lib, shape, F16)
    monkeypatch.setenv(VARIANT_ENV, "bogus")
    assert call(lib, shape, F16, ws_bytes=need - 1) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    if value is None:
        monkeypatch.delenv(VARIANT_ENV)
    else:
        monkeypatch.setenv(VARIANT_ENV, value)
    assert call(lib, shape, F16, ws_bytes=need - 1) == S["SRD_ERR_WORKSPACE_TOO_SMALL"]
