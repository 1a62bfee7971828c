"""CPU checks of the CUDA kernels library: it builds (once per session, wherever nvcc is, for the
default architectures), its C ABI validates arguments without a GPU and tells "no kernel variant
fits" (SRD_ERR_UNSUPPORTED) apart from a CUDA failure (SRD_ERR_CUDA), and the loader falls back to
the reference only for the first (one warning per reason) or when the library is missing."""
import ctypes
import logging
import re
import subprocess
import sys

import pytest
import torch

import models  # noqa: F401  (registers torch.ops.srdeploy)
from models import ops
from plugins import build as plugin_build
from plugins import kernels as binding

NULL = None
FAKE = 0x1000  # a non-NULL pointer validation never dereferences

S = {name: code for code, name in binding.STATUS.items()}
F32, F16 = 0, 1


@pytest.fixture(scope="session")
def kernels(built_library):
    return binding.load(built_library)


@pytest.fixture(scope="session")
def lib(kernels):
    return kernels.lib


def cuda_runtime_usable(lib) -> bool:
    """Whether the CUDA runtime sees a device (then CUB's size query succeeds)."""
    size = ctypes.c_size_t()
    return lib.srd_bucket_sort_workspace_size(1, 16, 4, ctypes.byref(size)) == S["SRD_SUCCESS"]


def nvcc_version() -> tuple[int, int]:
    text = subprocess.run([plugin_build.find_nvcc(), "--version"], capture_output=True, text=True).stdout
    major, minor = re.search(r"release (\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def test_default_architectures_follow_the_nvcc_version(built_library):
    """sm_80 and sm_90 always; sm_100 (+ its PTX) only where nvcc can target it (>= 12.8)."""
    archs = plugin_build.built_architectures(built_library.parent)
    if nvcc_version() >= (12, 8):
        assert archs == "80-real;90-real;100"
    else:
        assert archs == "80-real;90"


def test_library_names_are_defined_once():
    """plugins/build.py names the files and passes the names to CMake; CMakeLists.txt's defaults (a plain
    `cmake` run) make the same files."""
    text = (plugin_build.SOURCE_DIR / "CMakeLists.txt").read_text()
    defaults = dict(re.findall(r'set\((SRD_\w+_OUTPUT_NAME) "([^"]+)"', text))
    assert defaults == {"SRD_KERNELS_OUTPUT_NAME": plugin_build.output_name(plugin_build.LIB_NAME),
                        "SRD_TRT_OUTPUT_NAME": plugin_build.output_name(plugin_build.TRT_LIB_NAME)}
    assert plugin_build.LIB_NAME == f"lib{defaults['SRD_KERNELS_OUTPUT_NAME']}.so"


def test_build_error_is_an_srdeploy_error_without_torch():
    """BuildError derives from the project's error root, and `python -m plugins.build` stays light."""
    from models.errors import SrdeployError

    assert issubclass(plugin_build.BuildError, SrdeployError)
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", "import plugins.build"], capture_output=True,
                         text=True, cwd=plugin_build.SOURCE_DIR.parent, check=True)
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "models.errors" in imported and "torch" not in imported


def test_library_builds_and_exports_only_the_c_abi(built_library, kernels):
    assert built_library.is_file()
    assert kernels.lib.srd_abi_version() == binding.ABI_VERSION
    assert kernels.lib.srd_status_string(5) == b"SRD_ERR_WORKSPACE_TOO_SMALL"
    assert kernels.lib.srd_status_string(99) == b"SRD_ERR_UNKNOWN"
    with pytest.raises(AttributeError):  # internal launchers stay hidden
        kernels.lib.makeKeys  # noqa: B018


# ------------------------------------------------------------------------------- BucketSort

def sort_size(lib, batch, length, buckets, out=True):
    size = ctypes.c_size_t(123)
    return lib.srd_bucket_sort_workspace_size(batch, length, buckets, ctypes.byref(size) if out else None), size


@pytest.mark.parametrize("batch,length,buckets,expected", [
    (0, 10, 4, "SRD_ERR_INVALID_SIZE"),
    (1, 0, 4, "SRD_ERR_INVALID_SIZE"),
    (1, -5, 4, "SRD_ERR_INVALID_SIZE"),
    (1 << 16, 1 << 16, 4, "SRD_ERR_INVALID_SIZE"),  # batch * length > int32
    (1, 10, 0, "SRD_ERR_INVALID_ATTRIBUTE"),
    (1 << 20, 1, 1 << 12, "SRD_ERR_INVALID_ATTRIBUTE"),  # batch * num_buckets > int32
])
def test_bucket_sort_size_rejects(lib, batch, length, buckets, expected):
    status, size = sort_size(lib, batch, length, buckets)
    assert status == S[expected] and size.value == 123
    assert lib.srd_last_error_message()  # a reason is given


def test_bucket_sort_size_query(lib):
    assert sort_size(lib, 1, 10, 4, out=False)[0] == S["SRD_ERR_NULL_POINTER"]
    status, size = sort_size(lib, 1, 4 * 4096, 4 * 128)
    if cuda_runtime_usable(lib):
        assert status == S["SRD_SUCCESS"] and size.value >= 3 * 4 * 4096 * 4
    else:  # CUB asks the runtime for the device even for the size query
        assert status == S["SRD_ERR_CUDA"] and b"CUDA error" in lib.srd_last_error_message()


@pytest.mark.parametrize("ptrs", [(NULL, FAKE, FAKE, FAKE), (FAKE, NULL, FAKE, FAKE), (FAKE, FAKE, NULL, FAKE),
                                  (FAKE, FAKE, FAKE, NULL)])
def test_bucket_sort_null_pointers(lib, ptrs):
    codes, order, rank, ws = ptrs
    assert lib.srd_bucket_sort(codes, order, rank, 1, 16, 4, ws, 1 << 20, None) == S["SRD_ERR_NULL_POINTER"]


def test_bucket_sort_bad_sizes_before_cuda(lib):
    assert lib.srd_bucket_sort(FAKE, FAKE, FAKE, 1, 0, 4, FAKE, 1 << 20, None) == S["SRD_ERR_INVALID_SIZE"]
    assert lib.srd_bucket_sort(FAKE, FAKE, FAKE, 1, 16, -1, FAKE, 1 << 20, None) == S["SRD_ERR_INVALID_ATTRIBUTE"]


def test_bucket_sort_workspace_too_small(lib):
    if not cuda_runtime_usable(lib):
        pytest.skip("the workspace check follows CUB's size query, which needs a CUDA device")
    assert lib.srd_bucket_sort(FAKE, FAKE, FAKE, 1, 16, 4, FAKE, 1, None) == S["SRD_ERR_WORKSPACE_TOO_SMALL"]


# -------------------------------------------------------------------------- BucketAttention

def attention_size(lib, n, L, c, C, cs, R, dtype=F32):
    size = ctypes.c_size_t(123)
    return lib.srd_bucket_attention_workspace_size(n, L, c, C, cs, R, dtype, ctypes.byref(size)), size.value


def test_bucket_attention_workspace_size_covers_the_gather_variant(lib):
    n, L, c, C, cs, R = 1, 128 * 128, 64, 256, 144, 4

    def up(x):
        return -(-x // 256) * 256

    gather = up(4 * n * L) + up(4 * n * R * L * C) + up(4 * n * R * L)
    # At least the gather variant's (fp32 inside); the exact max over both variants is checked
    # in test_bucket_attention_variants.py.
    for dtype in (F32, F16):
        status, size = attention_size(lib, n, L, c, C, cs, R, dtype)
        assert status == S["SRD_SUCCESS"] and size >= gather
    assert lib.srd_bucket_attention_workspace_size(n, L, c, C, cs, R, F32, None) == S["SRD_ERR_NULL_POINTER"]


@pytest.mark.parametrize("args,expected", [
    ((0, 100, 8, 8, 10, 2), "SRD_ERR_INVALID_SIZE"),
    ((1, 0, 8, 8, 10, 2), "SRD_ERR_INVALID_SIZE"),
    ((1, 100, 0, 8, 10, 2), "SRD_ERR_INVALID_SIZE"),
    ((1, 100, 8, -1, 10, 2), "SRD_ERR_INVALID_SIZE"),
    ((70000, 100, 8, 8, 10, 2), "SRD_ERR_INVALID_SIZE"),  # batch is a grid dimension
    ((1, 100, 8, 8, 0, 2), "SRD_ERR_INVALID_ATTRIBUTE"),
    ((1, 100, 8, 8, 101, 2), "SRD_ERR_INVALID_ATTRIBUTE"),  # L < cs is outside the domain
    ((1, 100, 8, 8, 10, 0), "SRD_ERR_INVALID_ATTRIBUTE"),
    ((1, 100, 8, 8, 10, 257), "SRD_ERR_INVALID_ATTRIBUTE"),
    ((64, 1 << 20, 8, 256, 144, 4), "SRD_ERR_INVALID_SIZE"),  # > int32 elements
    ((1, 100, 257, 8, 10, 2), "SRD_ERR_UNSUPPORTED"),
])
def test_bucket_attention_size_rejects(lib, args, expected):
    assert attention_size(lib, *args) == (S[expected], 123)


def test_bucket_attention_rejects_dtype(lib):
    assert attention_size(lib, 1, 100, 8, 8, 10, 2, dtype=2)[0] == S["SRD_ERR_UNSUPPORTED_DTYPE"]
    assert attention_size(lib, 1, 100, 8, 8, 10, 2, dtype=-1)[0] == S["SRD_ERR_UNSUPPORTED_DTYPE"]


def call_attention(lib, ptrs=(FAKE,) * 5, shape=(1, 100, 8, 8, 10, 2), eps=5e-5, dtype=F32, ws=FAKE, ws_bytes=None):
    if ws_bytes is None:
        ws_bytes = attention_size(lib, *shape, dtype)[1]
    return lib.srd_bucket_attention(*ptrs, *shape, eps, dtype, ws, ws_bytes, None)


@pytest.mark.parametrize("i", range(5))
def test_bucket_attention_null_pointers(lib, i):
    ptrs = [FAKE] * 5
    ptrs[i] = NULL
    assert call_attention(lib, ptrs=ptrs) == S["SRD_ERR_NULL_POINTER"]


def test_bucket_attention_call_validation(lib):
    assert call_attention(lib, shape=(1, 100, 8, 8, 200, 2), ws_bytes=1 << 20) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    assert call_attention(lib, eps=-1.0) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    assert call_attention(lib, eps=float("nan")) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    assert call_attention(lib, eps=float("inf")) == S["SRD_ERR_INVALID_ATTRIBUTE"]
    assert call_attention(lib, dtype=7, ws_bytes=1 << 20) == S["SRD_ERR_UNSUPPORTED_DTYPE"]
    need = attention_size(lib, 1, 100, 8, 8, 10, 2)[1]
    assert call_attention(lib, ws_bytes=need - 1) == S["SRD_ERR_WORKSPACE_TOO_SMALL"]
    assert call_attention(lib, ws=NULL) == S["SRD_ERR_NULL_POINTER"]


def test_no_fitting_variant_is_unsupported_not_a_cuda_error(lib):
    """c > 256 is a capability limit, decided before any launch: SRD_ERR_UNSUPPORTED with the reason."""
    assert call_attention(lib, shape=(1, 100, 257, 8, 10, 2), ws_bytes=1 << 20) == S["SRD_ERR_UNSUPPORTED"]
    assert b"c > 256" in lib.srd_last_error_message()


def test_a_cuda_failure_is_srd_err_cuda(lib):
    """Valid arguments on a machine without a usable device: the failure comes from CUDA, so it is
    SRD_ERR_CUDA naming the CUDA error, never SRD_ERR_UNSUPPORTED (which would fall back silently)."""
    if cuda_runtime_usable(lib):
        pytest.skip("a CUDA device is usable here: the calls below would run on fake pointers")
    assert call_attention(lib) == S["SRD_ERR_CUDA"]
    message = lib.srd_last_error_message()
    assert message.startswith(b"bucket_attention: CUDA error") and b"no kernel variant" not in message
    need = fold_size(lib)[1]
    assert lib.srd_cross_scale_fold(FAKE, FAKE, FAKE, 1, 16, 8, 8, 4, 6, 6, 2, 2, F32, FAKE, need, None) \
        == S["SRD_ERR_CUDA"]
    assert lib.srd_last_error_message().startswith(b"cross_scale_fold: CUDA error")


# --------------------------------------------------------------------------- CrossScaleFold

def fold_size(lib, n=1, k=16, h=8, w=8, C=4, kh=6, kw=6, stride=2, padding=2, dtype=F32):
    size = ctypes.c_size_t(123)
    return lib.srd_cross_scale_fold_workspace_size(n, k, h, w, C, kh, kw, stride, padding, dtype,
                                                   ctypes.byref(size)), size.value


def test_cross_scale_fold_workspace_size_is_exact(lib):
    n, k, h, w, C, kk = 2, 24 * 24, 48, 48, 128, 6
    expected = -(-(4 * n * C * kk * kk * h * w) // 256) * 256
    assert fold_size(lib, n, k, h, w, C, kk, kk, 2, 2) == (S["SRD_SUCCESS"], expected)
    assert fold_size(lib, n, k, h, w, C, kk, kk, 2, 2, F16) == (S["SRD_SUCCESS"], expected)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(n=0), "SRD_ERR_INVALID_SIZE"),
    (dict(k=0), "SRD_ERR_INVALID_SIZE"),
    (dict(h=-1), "SRD_ERR_INVALID_SIZE"),
    (dict(C=0), "SRD_ERR_INVALID_SIZE"),
    (dict(kh=0), "SRD_ERR_INVALID_SIZE"),
    (dict(n=1 << 17), "SRD_ERR_INVALID_SIZE"),
    (dict(stride=0), "SRD_ERR_INVALID_ATTRIBUTE"),
    (dict(padding=-1), "SRD_ERR_INVALID_ATTRIBUTE"),
    (dict(h=1, w=1, kh=2, kw=2, padding=1), "SRD_ERR_INVALID_ATTRIBUTE"),  # empty output
    (dict(h=4096, w=4096, k=4096, C=64), "SRD_ERR_INVALID_SIZE"),
    (dict(dtype=3), "SRD_ERR_UNSUPPORTED_DTYPE"),
])
def test_cross_scale_fold_size_rejects(lib, kwargs, expected):
    assert fold_size(lib, **kwargs) == (S[expected], 123)


def test_cross_scale_fold_call_validation(lib):
    args = (1, 16, 8, 8, 4, 6, 6, 2, 2)
    need = fold_size(lib)[1]
    for i in range(3):
        ptrs = [FAKE] * 3
        ptrs[i] = NULL
        assert lib.srd_cross_scale_fold(*ptrs, *args, F32, FAKE, need, None) == S["SRD_ERR_NULL_POINTER"]
    assert lib.srd_cross_scale_fold(FAKE, FAKE, FAKE, *args, F32, FAKE, need - 1, None) == S["SRD_ERR_WORKSPACE_TOO_SMALL"]
    assert lib.srd_cross_scale_fold(FAKE, FAKE, FAKE, *args, F32, NULL, need, None) == S["SRD_ERR_NULL_POINTER"]
    assert lib.srd_cross_scale_fold(FAKE, FAKE, FAKE, *args[:-1], -3, F32, FAKE, need, None) == S["SRD_ERR_INVALID_ATTRIBUTE"]


# ------------------------------------------------------------------------------------ loader

@pytest.fixture
def fresh_loader(monkeypatch):
    binding.reset()
    yield binding
    binding.reset()


def test_loader_finds_library_from_env(fresh_loader, monkeypatch, built_library):
    monkeypatch.setenv(binding.LIB_ENV, str(built_library))
    assert binding.library_path() == built_library
    kernels = binding.get()
    assert kernels is not None and kernels.path == built_library
    assert binding.status()["library"] == str(built_library)


def test_loader_rejects_a_foreign_library(fresh_loader, tmp_path):
    with pytest.raises(binding.KernelsUnavailable, match="not found"):
        binding.load(tmp_path / "missing.so")
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(binding.KernelsUnavailable, match="cannot load"):
        binding.load(bogus)


def test_missing_library_falls_back_to_reference_with_one_warning(fresh_loader, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(binding.LIB_ENV, str(tmp_path / "nowhere" / "libsrdeploy_kernels.so"))
    binding.enable()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 8, (2, 300), dtype=torch.int32, generator=g)
    q, v = torch.randn(1, 40, 4, generator=g), torch.randn(1, 40, 6, generator=g)
    order, rank = ops.bucket_sort_reference(torch.randint(0, 4, (1, 80), dtype=torch.int32, generator=g), 4)
    scores, patches = torch.rand(2, 9, 3, 3, generator=g), torch.randn(2, 9, 5, 6, 6, generator=g)
    with caplog.at_level(logging.WARNING, logger="srdeploy.plugins"):
        # The registered CUDA implementations, called directly (no GPU here).
        for _ in range(2):
            got = binding._cuda_bucket_sort(codes, 8)
            want = ops.bucket_sort_reference(codes, 8)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
            torch.testing.assert_close(binding._cuda_bucket_attention(q, v, order, rank, 16, 2, 5e-5),
                                       ops.bucket_attention_reference(q, v, order, rank, 16, 2, 5e-5), rtol=0, atol=0)
            torch.testing.assert_close(binding._cuda_cross_scale_fold(scores, patches, 2, 2),
                                       ops.cross_scale_fold_reference(scores, patches, 2, 2), rtol=0, atol=0)
    warnings = [r for r in caplog.records if r.name == "srdeploy.plugins"]
    assert len(warnings) == 1
    assert "python -m plugins.build" in warnings[0].getMessage() and binding.LIB_ENV in warnings[0].getMessage()
    assert binding.status()["library"] is None


def test_enable_registers_cuda_and_keeps_cpu_on_the_reference(fresh_loader):
    binding.enable()
    binding.enable()  # idempotent
    for name in ("bucket_sort", "bucket_attention", "cross_scale_fold"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"srdeploy::{name}", "CUDA")
    codes = torch.tensor([[3, 1, 3, 1, 0, 3]], dtype=torch.int32)
    assert torch.ops.srdeploy.bucket_sort(codes, 4)[0].tolist() == [[4, 1, 3, 0, 2, 5]]


def test_kernels_refuse_cpu_tensors_and_other_dtypes(kernels):
    with pytest.raises(ValueError, match="CUDA"):
        kernels.bucket_sort(torch.zeros(1, 8, dtype=torch.int32), 4)
    x = torch.zeros(1, 8, 4, dtype=torch.float64)
    with pytest.raises((ValueError, binding.KernelError)):
        kernels.bucket_attention(x, x, torch.zeros(1, 16, dtype=torch.int32), torch.zeros(1, 16, dtype=torch.int32),
                                 4, 2, 5e-5)
    # A dtype without a kernel is "no variant fits" (the reference takes over); mixed dtypes are a caller's bug.
    with pytest.raises(binding.KernelError) as e:
        kernels._dtype("bucket_attention", x.bfloat16(), x.bfloat16())
    assert e.value.status == S["SRD_ERR_UNSUPPORTED"]
    with pytest.raises(ValueError, match="one dtype"):
        kernels._dtype("bucket_attention", x.float(), x.half())


def loader_run(call, fallback_calls: list):
    """binding._run (the decision the registered CUDA implementations make) with a real library call."""
    return binding._run("bucket_attention", call, lambda: fallback_calls.append(1) or "reference")


def test_loader_falls_back_only_when_no_variant_fits_once_per_reason(fresh_loader, monkeypatch, built_library,
                                                                      caplog):
    monkeypatch.setenv(binding.LIB_ENV, str(built_library))
    fallbacks = []

    def too_wide(k):  # c = 257: the library's capability check answers SRD_ERR_UNSUPPORTED
        k.check("bucket_attention", call_attention(k.lib, shape=(1, 100, 257, 8, 10, 2), ws_bytes=1 << 20))

    def bf16(k):  # the loader's own capability check
        k._dtype("bucket_attention", torch.zeros(1, dtype=torch.bfloat16))

    with caplog.at_level(logging.WARNING, logger="srdeploy.plugins"):
        for _ in range(3):
            assert loader_run(too_wide, fallbacks) == "reference"
            assert loader_run(bf16, fallbacks) == "reference"
    assert len(fallbacks) == 6
    warnings = [r.getMessage() for r in caplog.records if r.name == "srdeploy.plugins"]
    assert len(warnings) == 2  # one per reason, each naming it
    assert "SRD_ERR_UNSUPPORTED" in warnings[0] and "c > 256" in warnings[0] and "PyTorch reference" in warnings[0]
    assert "torch.bfloat16" in warnings[1]


@pytest.mark.parametrize("status", ["SRD_ERR_CUDA", "SRD_ERR_INVALID_ATTRIBUTE", "SRD_ERR_UNSUPPORTED_DTYPE",
                                    "SRD_ERR_WORKSPACE_TOO_SMALL"])
def test_loader_raises_every_other_failure(fresh_loader, monkeypatch, built_library, caplog, status):
    monkeypatch.setenv(binding.LIB_ENV, str(built_library))
    real_calls = {  # each produces `status` from the real library on this machine
        "SRD_ERR_INVALID_ATTRIBUTE": lambda lib: call_attention(lib, eps=-1.0),
        "SRD_ERR_UNSUPPORTED_DTYPE": lambda lib: call_attention(lib, dtype=7, ws_bytes=1 << 20),
        "SRD_ERR_WORKSPACE_TOO_SMALL": lambda lib: call_attention(lib, ws_bytes=1),
        "SRD_ERR_CUDA": lambda lib: call_attention(lib),  # valid arguments, no usable device
    }
    if status == "SRD_ERR_CUDA" and cuda_runtime_usable(binding.get().lib):
        pytest.skip("a CUDA device is usable here: a valid call would run on fake pointers")
    fallbacks = []
    with caplog.at_level(logging.WARNING, logger="srdeploy.plugins"):
        with pytest.raises(binding.KernelError) as e:
            loader_run(lambda k: k.check("bucket_attention", real_calls[status](k.lib)), fallbacks)
    assert e.value.status == S[status] and status in str(e.value)
    assert not fallbacks and not [r for r in caplog.records if r.name == "srdeploy.plugins"]


def test_reference_only_context(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setenv(binding.LIB_ENV, str(tmp_path / "none.so"))
    with binding.reference_only():
        assert binding._active() is None
        assert not binding._state["tried"]  # the library is not even looked for
    assert binding._active() is None and binding._state["tried"]
