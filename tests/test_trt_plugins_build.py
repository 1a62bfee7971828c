"""The TensorRT plugin library, built and exercised on the CPU against TensorRT *headers*.

The session fixture ``trt_plugins_lib`` (tests/conftest.py) builds it once against the TensorRT
11.1 headers (``../shared/third_party/tensorrt``, or ``$SRDEPLOY_TRT_HEADERS`` / ``$SRDEPLOY_SHARED``;
TensorRT itself need not be installed: the plugins link no TensorRT library). What runs:

- the CMake build of libsrdeploy_trt_plugins.so and its test programs with warnings as errors
  (-Wsuggest-override etc.);
- its dynamic symbols are exactly getCreators and setLoggerFinder, and it needs no libnvinfer;
- the interface driver (plugins/trt/harness/interfaceDriver.cpp, built with it) dlopens it and calls,
  through the TensorRT interfaces only, what TensorRT calls before any GPU work: getCreators, the
  creators' names/versions/namespaces/fields, createPlugin with ONNX-parser-style fields, attribute
  validation, getCapabilityInterface, getNbOutputs, getOutputDataTypes, supportsFormatCombination,
  getOutputShapes with an IExprBuilder that evaluates constants, configurePlugin (ranks and types;
  extents of fixed profiles) / getWorkspaceSize / onShapeChange (BucketAttention, CrossScaleFold:
  arithmetic), getTimingCacheID, getFieldsToSerialize -> createPlugin(kRUNTIME) (what engine
  deserialisation does), clone and attachToContext;
- the BucketSort plugin against a counting stand-in for the kernel library: onShapeChange queries
  the workspace once per shape (workspaceQueryCheck.cpp).
enqueue (the kernels on a GPU) runs in tests/test_plugin_enqueue.py (GPU only).
"""
import ctypes
import subprocess
from pathlib import Path

import pytest

from plugins import trt


def test_builds_and_exports_only_the_loader_entry_points(trt_plugins_lib):
    lib = trt_plugins_lib
    nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    symbols = sorted(line.split()[-1] for line in nm.stdout.splitlines() if line.strip())
    assert symbols == ["getCreators", "setLoggerFinder"]
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer" not in needed and "libcudart.so" not in needed  # headers only; static cudart


def test_get_creators_from_python(trt_plugins_lib):
    handle = ctypes.CDLL(str(trt_plugins_lib))
    n = ctypes.c_int32(-1)
    handle.getCreators.restype = ctypes.c_void_p
    handle.getCreators.argtypes = [ctypes.POINTER(ctypes.c_int32)]  # int32_t& is a pointer in the ABI
    assert handle.getCreators(ctypes.byref(n)) and n.value == 3


def test_plugins_through_the_tensorrt_interfaces(trt_plugins_lib):
    driver = trt_plugins_lib.parent / trt.DRIVER_NAME
    run = subprocess.run([str(driver), str(trt_plugins_lib)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "PASSED 0 failures" in run.stdout, run.stdout + run.stderr
    for op in ("BucketSort", "BucketAttention", "CrossScaleFold"):
        assert f"OK creator {op} v1 ns=srdeploy" in run.stdout and f"OK roundtrip {op}" in run.stdout
        assert f"timing-cache-id 'srdeploy::{op}/1 " in run.stdout  # timing caching on, keyed by attributes
    # Bad attributes are refused with a message naming the op (stderr: no TensorRT logger here).
    assert "[srdeploy] BucketSort: num_buckets must be > 0" in run.stderr
    assert "[srdeploy] BucketAttention: attribute n_hashes must be an integer" in run.stderr
    assert "L = 100 < chunk_size = 144" in run.stderr
    # Extents: refused by configurePlugin only for a fixed profile, by onShapeChange at run time.
    assert "[srdeploy] BucketAttention: shapes disagree: q [1, 1024, 16], v [1, 1024, 64], order [1, 4000]" in run.stderr
    assert "[srdeploy] CrossScaleFold: shapes disagree" in run.stderr


def test_on_shape_change_queries_the_workspace_once_per_shape(trt_plugins_lib):
    """BucketSort's plugin compiled against a counting stand-in for the kernel library's size query
    (the real one asks CUB, which needs a GPU): repeated onShapeChange calls with one shape query
    once; a new shape or type queries again; a failed query is not remembered; clones keep the memo."""
    check = trt_plugins_lib.parent / trt.WORKSPACE_CHECK_NAME
    run = subprocess.run([str(check)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "PASSED (7 workspace queries)" in run.stdout, run.stdout + run.stderr


def test_plugin_library_loads_in_tensorrt(trt_plugins_lib):
    """Where TensorRT is installed: IPluginRegistry::loadLibrary finds the three creators."""
    tensorrt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be installed on CI machines)")
    registry = tensorrt.get_plugin_registry()
    assert registry.load_library(str(trt_plugins_lib))
    for op in ("BucketSort", "BucketAttention", "CrossScaleFold"):
        assert registry.get_creator(op, "1", "srdeploy") is not None


def test_each_op_in_one_folder():
    """As NVIDIA's plugin/<name>Plugin/: kernel, launcher header, IPluginV3 class and README together in
    plugins/<op>/; plugins/trt/ keeps only the shared base, the library entry points and the harness. The
    plugins implement throwing do... methods: no catch block outside the base."""
    root = Path(trt.__file__).resolve().parents[1]
    for op in ("bucketSort", "bucketAttention", "crossScaleFold"):
        folder = root / op
        wanted = {f"{op}Kernel.cu", f"{op}Kernel.h", f"{op}Plugin.h", f"{op}Plugin.cpp", "README.md"}
        assert wanted <= {p.name for p in folder.iterdir()}, folder
        for source in (folder / f"{op}Plugin.h", folder / f"{op}Plugin.cpp"):
            assert "catch" not in source.read_text(), f"{source}: the base owns the noexcept edge"
    assert sorted(p.name for p in (root / "trt").glob("*.[hc]*")) == [
        "srdPluginBase.h", "srdPluginCommon.cpp", "srdPluginCommon.h", "srdPluginLibrary.cpp"]
