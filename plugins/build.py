"""Build libsrdeploy_kernels.so with CMake: ``python -m plugins.build``.

    python -m plugins.build                       # plugins/build/libsrdeploy_kernels.so
    python -m plugins.build --build-dir /tmp/b --arch 90-real --jobs 8
    python -m plugins.build --tensorrt-root /opt/tensorrt  # + libsrdeploy_trt_plugins.so (TensorRT plugins)

The build folder (default ``plugins/build/``) is outside git (.gitignore: ``build/``). The
library is found there by :mod:`plugins.kernels`, or wherever ``SRDEPLOY_KERNELS_LIB`` points.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from models.errors import SrdeployError  # light: models/__init__ is lazy, torch is not imported

SOURCE_DIR = Path(__file__).resolve().parent
DEFAULT_BUILD_DIR = SOURCE_DIR / "build"
# The libraries' file names, defined here only: build() passes them to CMake (SRD_*_OUTPUT_NAME, whose
# defaults in CMakeLists.txt serve a plain `cmake` run; tests/test_kernels_build.py checks they agree).
LIB_NAME = "libsrdeploy_kernels.so"
TRT_LIB_NAME = "libsrdeploy_trt_plugins.so"  # built when TensorRT headers are given (--tensorrt-root)
# Without --arch, CMakeLists.txt chooses the architectures (the rule lives there only).
DEFAULT_ARCHS_HELP = "sm_80, sm_90 and sm_100 (+ PTX) with nvcc >= 12.8, else sm_80 and sm_90 (+ PTX)"


class BuildError(SrdeployError, RuntimeError):
    """The build cannot run or failed; the message names the cause (with the log's tail)."""


def output_name(file_name: str) -> str:
    """CMake's OUTPUT_NAME of a shared library: "srdeploy_kernels" for "libsrdeploy_kernels.so"."""
    return file_name[len("lib"):-len(".so")]


def find_nvcc() -> str | None:
    """nvcc from $CUDACXX, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin, or None."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(str(Path(root) / "bin" / "nvcc"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def build(build_dir: str | Path | None = None, *, archs: str | None = None, jobs: int = 2,
          build_type: str = "Release", werror: bool = True, quiet: bool = False,
          tensorrt_root: str | Path | None = None) -> Path:
    """Configure and build; return the path of the kernels library. Raises BuildError with the log tail.

    ``tensorrt_root``: a TensorRT install (or any folder with ``include/NvInfer.h``); the TensorRT
    plugin library ``TRT_LIB_NAME`` is then built next to the kernels library (only headers needed)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set CUDACXX or put the CUDA toolkit's bin/ on PATH)")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found")
    build_dir = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    configure = [cmake, "-S", str(SOURCE_DIR), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DSRD_WERROR={'ON' if werror else 'OFF'}",
                 f"-DSRD_KERNELS_OUTPUT_NAME={output_name(LIB_NAME)}",
                 f"-DSRD_TRT_OUTPUT_NAME={output_name(TRT_LIB_NAME)}",
                 # no --arch: forget an earlier choice, CMakeLists.txt picks the default for this nvcc
                 f"-DCMAKE_CUDA_ARCHITECTURES={archs}" if archs else "-UCMAKE_CUDA_ARCHITECTURES"]
    if tensorrt_root:
        if not (Path(tensorrt_root) / "include" / "NvInfer.h").is_file():
            raise BuildError(f"--tensorrt-root {tensorrt_root}: no include/NvInfer.h there")
        configure += [f"-DTENSORRT_ROOT={Path(tensorrt_root).resolve()}", "-DSRD_BUILD_TRT_PLUGINS=ON"]
    else:  # a cached TENSORRT_ROOT of an earlier configure would silently keep building it
        configure += ["-DTENSORRT_ROOT=", "-DTENSORRT_INCLUDE_DIR=", "-DSRD_BUILD_TRT_PLUGINS=OFF"]
    steps = [configure, [cmake, "--build", str(build_dir), "-j", str(max(1, jobs))]]
    start = time.perf_counter()
    for cmd in steps:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not quiet:
            sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    lib = build_dir / LIB_NAME
    if not lib.is_file():
        raise BuildError(f"the build finished but {lib} is missing")
    if tensorrt_root and not (build_dir / TRT_LIB_NAME).is_file():
        raise BuildError(f"the build finished but {build_dir / TRT_LIB_NAME} is missing")
    if not quiet:
        built = f"{lib}" + (f" and {build_dir / TRT_LIB_NAME}" if tensorrt_root else "")
        print(f"built {built} for {built_architectures(build_dir)} in {time.perf_counter() - start:.1f} s")
    return lib


def built_architectures(build_dir: str | Path) -> str | None:
    """CMAKE_CUDA_ARCHITECTURES of a configured build folder (e.g. "80-real;90-real;100"), or None."""
    cache = Path(build_dir) / "CMakeCache.txt"
    if not cache.is_file():
        return None
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_CUDA_ARCHITECTURES:"):
            return line.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m plugins.build", description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=str(DEFAULT_BUILD_DIR), help="CMake build folder (default %(default)s)")
    p.add_argument("--arch", default=None, help=f"CMAKE_CUDA_ARCHITECTURES (default: {DEFAULT_ARCHS_HELP})")
    p.add_argument("--jobs", "-j", type=int, default=2, help="parallel compile jobs (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="Debug build")
    p.add_argument("--no-werror", action="store_true", help="do not treat warnings as errors")
    p.add_argument("--clean", action="store_true", help="remove the build folder first")
    p.add_argument("--tensorrt-root", metavar="DIR", default=None,
                   help=f"TensorRT install (its include/ is enough): also build {TRT_LIB_NAME}, the TensorRT "
                        f"plugins (without it they are skipped)")
    args = p.parse_args(argv)
    if args.clean and Path(args.build_dir).exists():
        shutil.rmtree(args.build_dir)
    try:
        build(args.build_dir, archs=args.arch, jobs=args.jobs, build_type="Debug" if args.debug else "Release",
              werror=not args.no_werror, tensorrt_root=args.tensorrt_root)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
