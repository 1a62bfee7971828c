"""Serving throughput and latency through a real Triton server, with and without tile batching.

    python -m benchmarks.serving --out-dir benchmarks/results

One ``tritonserver`` (``runtime.serve.TritonServer``) hosts two copies of the same srdeploy model
written by ``export.triton``: ``<model>_batched`` (the tile model has Triton's dynamic batcher) and
``<model>_unbatched`` (``--no-batching``: every tile runs alone). For each concurrency (1, 4, 8
clients, each sending ``--requests`` images one after another), both variants are measured in turn in
the same run: images/s over the wall time, p50/p90 request latency, and the mean tile batch the
server's statistics report. Writes serving.json and serving.md to ``--out-dir``. The same command
runs on a GPU host with ``--device cuda``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import common
from models.files import atomic_write

PROG = "python -m benchmarks.serving"
COLUMNS = [("concurrency", "clients"), ("variant", "tile batching"), ("images", "images"),
           ("images_per_s", "images/s"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
           ("mean_tile_batch", "mean tile batch"), ("max_tile_batch", "max tile batch")]
SAMPLE = common.REPO / "runtime" / "samples" / "sample.png"


def _tile_stats(client, model: str) -> dict[int, int]:
    """batch size -> number of executions of that size, so far."""
    stats = client.get_inference_statistics(model)["model_stats"][0].get("batch_stats", [])
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}


def _measure(url: str, model: str, images: list[np.ndarray], scale: int, concurrency: int, requests: int) -> dict:
    from runtime.client import Connection

    conn = Connection(url, "http")
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            for r in range(requests):
                lr = images[(k + r) % len(images)]
                t = time.perf_counter()
                sr = conn.infer(model, lr)
                dt = time.perf_counter() - t
                if sr.shape != (scale * lr.shape[0], scale * lr.shape[1], 3):
                    raise RuntimeError(f"answer of shape {sr.shape} for an LR image of {lr.shape}")
                with lock:
                    latencies.append(dt)
        except Exception as e:  # noqa: BLE001 - reported in the result, never hidden
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    conn.close()
    if errors:
        raise RuntimeError(f"{model}: {len(errors)} client(s) failed: {errors[0]}")
    ms = np.array(latencies) * 1000
    return {"images": len(latencies), "seconds": wall, "images_per_s": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="nlsn", help="architecture of the bundled weights (or --weights)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--weights", help="checkpoint (default: the bundled compact model)")
    p.add_argument("--device", default="cpu", help="where the tile model runs: cpu or cuda")
    p.add_argument("--size", type=common.size, default=(48, 48), help="LR image size HxW")
    p.add_argument("--tile", type=int, default=16, help="tile size (LR pixels)")
    p.add_argument("--tile-pad", type=int, default=4, help="context around each tile (LR pixels)")
    p.add_argument("--concurrency", type=common.csv(int), default=[1, 4, 8], help="clients, comma-separated")
    p.add_argument("--requests", type=int, default=3, help="images each client sends, one after another")
    p.add_argument("--image-instances", type=int, default=4, help="image-model instances (both variants)")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads of the tile model")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return p


def _measure_variants(args, images: list[np.ndarray], variants: dict[str, str]) -> list[dict]:
    """Both repositories in one server; every concurrency, batched and unbatched in turn."""
    import tritonclient.http as httpclient

    from export.triton import RepositoryOptions, write_repository
    from runtime.serve import TritonServer

    work = Path(tempfile.mkdtemp(prefix="srdeploy-bench-serving-"))
    try:
        repo = work / "repo"
        for batching, name in variants.items():
            written = write_repository(work / name, RepositoryOptions(
                model=args.model, scale=args.scale, weights=args.weights, device=args.device, tile=args.tile,
                tile_pad=args.tile_pad, batching=batching == "yes", max_batch_size=args.max_batch_size,
                image_instances=args.image_instances, torch_threads=args.torch_threads, name=name))
            repo.mkdir(exist_ok=True)
            for model_dir in written.iterdir():
                if model_dir.is_dir():
                    shutil.move(str(model_dir), repo / model_dir.name)
        print("starting tritonserver ...", file=sys.stderr)
        rows = []
        with TritonServer(repo, log=work / "server.log") as server:
            stats_client = httpclient.InferenceServerClient(server.http_url)
            for name in variants.values():  # warm-up: first calls load kernels and allocate
                _measure(server.http_url, name, images, args.scale, 1, 2)
            for c in args.concurrency:
                for batching, name in variants.items():
                    before = _tile_stats(stats_client, f"{name}_tile")
                    row = {"concurrency": c, "variant": batching, "model": name,
                           **_measure(server.http_url, name, images, args.scale, c, args.requests)}
                    after = _tile_stats(stats_client, f"{name}_tile")
                    runs = {b: after.get(b, 0) - before.get(b, 0) for b in after}
                    runs = {b: n for b, n in runs.items() if n > 0}
                    row["tile_batches"] = runs
                    row["mean_tile_batch"] = sum(b * n for b, n in runs.items()) / max(1, sum(runs.values()))
                    row["max_tile_batch"] = max(runs, default=0)
                    rows.append(row)
                    print(common.table([row], COLUMNS).splitlines()[-1], file=sys.stderr)
            stats_client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    outs = [args.out_dir / "serving.json", args.out_dir / "serving.md"]
    common.check_outputs(outs, args.overwrite)
    h, w = args.size
    img = np.asarray(Image.open(SAMPLE).convert("RGB"))
    if img.shape[0] < h + 8 or img.shape[1] < w + 8:
        raise SystemExit(f"error: --size {h}x{w} is larger than the sample image {img.shape[1]}x{img.shape[0]}")
    images = [np.ascontiguousarray(img[4 * k:4 * k + h, 4 * k:4 * k + w]) for k in range(3)]
    variants = {"yes": f"{args.model}_x{args.scale}_batched", "no": f"{args.model}_x{args.scale}_unbatched"}

    with common.one_line_errors(PROG):  # no bundled weights, a server that does not start, ...
        rows = _measure_variants(args, images, variants)

    tiles_per_image = (-(-h // args.tile)) * (-(-w // args.tile)) if args.tile else 1
    result = {"benchmark": "serving", "model": args.model, "scale": args.scale, "device": args.device,
              "size": [h, w], "tile": args.tile, "tile_pad": args.tile_pad, "tiles_per_image": tiles_per_image,
              "requests_per_client": args.requests, "image_instances": args.image_instances,
              "max_batch_size": args.max_batch_size, "torch_threads": args.torch_threads,
              "environment": common.environment(), "rows": rows}
    text = (f"# Serving through Triton: {args.model} x{args.scale}, {h}x{w} LR images, tile {args.tile}+"
            f"{args.tile_pad} ({tiles_per_image} tiles/image), {args.device}\n\n" + common.table(rows, COLUMNS) + "\n")
    common.write_json(outs[0], result)
    atomic_write(outs[1], text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
