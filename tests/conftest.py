"""Shared test setup: one CPU thread (two are slower on the CI machine), paths to ../shared, and the
TensorRT plugin library built once per session."""
import fcntl
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRDEPLOY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
#: the smallest EDSR: the CLI tests need a real network, not a fast one
TINY_EDSR = dict(n_resblocks=1, n_feats=8, rgb_range=1)
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set SRDEPLOY_SHARED)")
    return SHARED


def _test_arch() -> str:
    """One architecture keeps the build short: the GPU's own where there is one, else sm_90."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}-real"
    return "90-real"


@pytest.fixture(scope="session")
def trt_plugins_lib() -> Path:
    """libsrdeploy_trt_plugins.so (with the interface driver and the enqueue harness beside it), built
    once against the TensorRT headers (plugins.trt.tensorrt_root) into build/trt-plugins-<arch>/
    (ignored; CMake rebuilds only what changed, so reruns take seconds)."""
    from plugins import build as plugin_build
    from plugins import trt

    try:
        trt.tensorrt_root()
    except trt.HeadersNotFound as e:
        pytest.skip(str(e))
    if plugin_build.find_nvcc() is None:
        pytest.skip("nvcc not found: the kernels the plugins wrap cannot be compiled")
    arch = _test_arch()
    build_dir = trt.default_build_dir(arch)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:  # two test runs at once must not build into one folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return trt.build(build_dir, arch=arch, jobs=min(2, os.cpu_count() or 1))
        except plugin_build.BuildError as e:
            pytest.fail(f"the TensorRT plugin library does not build:\n{e}")


@pytest.fixture(scope="session")
def built_library(tmp_path_factory):
    """Builds plugins/ with CMake once per session (default architectures, warnings as errors);
    $SRDEPLOY_BUILD_JOBS parallel jobs (default 2)."""
    from plugins import build as plugin_build

    if plugin_build.find_nvcc() is None:
        pytest.skip("nvcc not found: the kernels library cannot be compiled here")
    build_dir = tmp_path_factory.mktemp("srd_kernels_build")
    try:
        return plugin_build.build(build_dir, jobs=int(os.environ.get("SRDEPLOY_BUILD_JOBS", "2")), quiet=True)
    except plugin_build.BuildError as e:
        pytest.fail(f"the kernels library does not build:\n{e}")


@pytest.fixture(autouse=True, scope="session")
def _export_cache(tmp_path_factory):
    """On-the-fly exports (runtime.backends.export_cache.cached_export) go to a per-session folder, not ~/.cache."""
    os.environ["SRDEPLOY_CACHE_DIR"] = str(tmp_path_factory.mktemp("srdeploy-cache"))
    yield
    os.environ.pop("SRDEPLOY_CACHE_DIR", None)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A tiny EDSR x2 checkpoint (seeded) for the command-line tests."""
    import models

    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("weights") / "edsr_x2.pt"
    torch.save(models.build("edsr", 2, **TINY_EDSR).state_dict(), p)
    return p
