"""The TensorRT plugin library ``libsrdeploy_trt_plugins.so`` from Python: where the TensorRT headers
it compiles against are, and a build of it with its test programs (``harness/``):

- ``srdeploy_trt_interface_driver LIB``: the TensorRT interfaces TensorRT calls before any GPU work
  (creators, fields, shapes, types, configure, workspace, serialisation); runs anywhere;
- ``srdeploy_trt_enqueue_harness``: the plugins enqueued on a GPU against Python's references
  (``python -m plugins.trt.harness``);
- ``srdeploy_trt_workspace_query_check``: the BucketSort plugin against a counting stand-in for the
  kernel library: one workspace query per shape in onShapeChange; runs anywhere.

Headers, first found: ``$SRDEPLOY_TRT_HEADERS`` (a TensorRT install or the folder holding
``NvInfer.h``), ``$SRDEPLOY_SHARED/third_party/tensorrt`` (default ``../shared`` beside the
repository), ``.gpu/tensorrt`` inside the repository (what ``scripts/prepare_gpu_run.sh`` copies
for a GPU machine, which receives only the checkout). Only headers are needed: the library links
no TensorRT library.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import build as plugin_build

__all__ = ["DRIVER_NAME", "HARNESS_NAME", "HEADERS_ENV", "WORKSPACE_CHECK_NAME", "HeadersNotFound", "build", "default_build_dir",
           "tensorrt_root"]

HEADERS_ENV = "SRDEPLOY_TRT_HEADERS"
DRIVER_NAME = "srdeploy_trt_interface_driver"
HARNESS_NAME = "srdeploy_trt_enqueue_harness"
WORKSPACE_CHECK_NAME = "srdeploy_trt_workspace_query_check"
REPO = Path(__file__).resolve().parents[2]


class HeadersNotFound(plugin_build.BuildError):
    pass


def _as_root(path: Path) -> Path | None:
    """The TensorRT root (holding include/NvInfer.h) for a root or an include folder, else None."""
    if (path / "include" / "NvInfer.h").is_file():
        return path
    if (path / "NvInfer.h").is_file() and path.name == "include":
        return path.parent
    return None


def tensorrt_root() -> Path:
    """The TensorRT root to compile against (see the module docstring); HeadersNotFound says where it looked."""
    value = os.environ.get(HEADERS_ENV)
    if value:
        root = _as_root(Path(value))
        if root is None:
            raise HeadersNotFound(f"{HEADERS_ENV}={value} holds neither include/NvInfer.h nor NvInfer.h in an "
                                  f"include/ folder: point it at a TensorRT install or its include/")
        return root
    shared = Path(os.environ.get("SRDEPLOY_SHARED", REPO.parent / "shared"))
    candidates = [shared / "third_party" / "tensorrt", REPO / ".gpu" / "tensorrt"]
    for c in candidates:
        root = _as_root(c)
        if root is not None:
            return root
    raise HeadersNotFound("no TensorRT headers in " + ", ".join(str(c / "include") for c in candidates)
                          + f": set {HEADERS_ENV} or SRDEPLOY_SHARED, or run scripts/prepare_gpu_run.sh")


def default_build_dir(arch: str) -> Path:
    """build/trt-plugins-<arch>/ in the repository (ignored): shared by the tests' fixture and
    ``python -m plugins.trt.harness``, so whichever runs second rebuilds nothing."""
    return REPO / "build" / f"trt-plugins-{arch.replace(';', '_')}"


def build(build_dir: str | Path, *, arch: str = "90-real", jobs: int = 2, quiet: bool = True) -> Path:
    """Build the kernels, the plugin library and its test programs into build_dir (CMake, incremental:
    a second call with nothing changed takes seconds); returns the plugin library's path. Raises
    plugin_build.BuildError (HeadersNotFound without TensorRT headers)."""
    build_dir = Path(build_dir)
    plugin_build.build(build_dir, archs=arch, jobs=jobs, quiet=quiet, tensorrt_root=tensorrt_root())
    for name in (DRIVER_NAME, HARNESS_NAME, WORKSPACE_CHECK_NAME):
        if not (build_dir / name).is_file():
            raise plugin_build.BuildError(f"the build finished but {build_dir / name} is missing")
    return build_dir / plugin_build.TRT_LIB_NAME
