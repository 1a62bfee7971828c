"""python -m plugins.trt.harness: build the plugin library and the enqueue harness, write the cases,
run them on the GPU, print one line per case (and the JSON with --json).

    python -m plugins.trt.harness                                  # build/trt-plugins-<arch>/, all cases
    python -m plugins.trt.harness --arch 90-real --json out/plugin_enqueue.json
    python -m plugins.trt.harness --library L --harness H          # prebuilt (no build)

Exit status: the harness's (0 passed, 1 a case failed, 2 bad input, 3 no CUDA device), 2 when the
build fails or no TensorRT headers are found.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .. import HARNESS_NAME, default_build_dir
from .. import build as build_plugins
from ... import build as plugin_build
from . import cases, run, write_cases


def _default_arch() -> str:
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}-real"
    return "90-real"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m plugins.trt.harness", description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=None, help="CMake build folder (default build/trt-plugins-<arch>)")
    p.add_argument("--arch", default=None, help="CMAKE_CUDA_ARCHITECTURES (default: this GPU's, else 90-real)")
    p.add_argument("--jobs", "-j", type=int, default=2, help="parallel compile jobs (default %(default)s)")
    p.add_argument("--library", default=None, help="a built libsrdeploy_trt_plugins.so (with --harness: no build)")
    p.add_argument("--harness", default=None, help=f"a built {HARNESS_NAME} (with --library: no build)")
    p.add_argument("--variants", default="gather,chunk", help="BucketAttention variants (default %(default)s)")
    p.add_argument("--work", default=None, help="folder for the cases (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the results here (JSON)")
    p.add_argument("--small", action="store_true", help="one small case per op")
    args = p.parse_args(argv)
    if (args.library is None) != (args.harness is None):
        print("error: --library and --harness go together (both prebuilt), or neither (build here)", file=sys.stderr)
        return 2

    if args.library is None:
        arch = args.arch or _default_arch()
        build_dir = Path(args.build_dir) if args.build_dir else default_build_dir(arch)
        start = time.perf_counter()
        try:
            library = build_plugins(build_dir, arch=arch, jobs=args.jobs)
        except plugin_build.BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        harness = build_dir / HARNESS_NAME
        print(f"built {library.name} and {HARNESS_NAME} ({arch}) in {time.perf_counter() - start:.1f} s")
    else:
        library, harness = Path(args.library), Path(args.harness)
        for path in (library, harness):
            if not path.is_file():
                print(f"error: {path} does not exist", file=sys.stderr)
                return 2

    with tempfile.TemporaryDirectory(prefix="srd_harness_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        start = time.perf_counter()
        selected = cases(small=args.small)
        write_cases(work, selected)
        print(f"wrote {len(selected)} cases to {work} in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        proc, _ = run(harness, library, work, json_path=args.json, variants=args.variants)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        print(f"harness exit {proc.returncode} in {time.perf_counter() - start:.1f} s")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
