"""``python -m runtime.client``: upscale images through a Triton server (``python -m runtime.serve``).

The same inputs, outputs and rules as ``python -m runtime.infer`` (its planning and existing-file
checks are reused: atomic writes, no silent overwrite, folder mode with ``--suffix``/``--ext``), with
the network behind ``--url`` over HTTP or gRPC and ``--concurrency`` requests in flight. The server
takes 8-bit RGB: gray inputs are sent as RGB and averaged back, alpha is upscaled here with the
bicubic of ``runtime.pipeline``, and 16-bit inputs are sent and written at 8 bits.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from models.cli import make_parser
from models.errors import SrdeployError, UsageError

from .imageio import quantize, read_image, write_image
from .infer import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from .jobs import Job, Messages, Plan, add_io_arguments, check_outputs, make_plan, name_outputs, summary

PROG = "python -m runtime.client"
PROTOCOLS = ("http", "grpc")


class RequestError(SrdeployError, RuntimeError):
    """The server answered a request with an error (one image fails; the run goes on)."""


def _client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


class Connection:
    """One tritonclient per thread (neither client type is meant to be shared across threads)."""

    def __init__(self, url: str, protocol: str = "http", timeout: float = 600.0):
        self.url, self.protocol, self.timeout = url, protocol, timeout
        self.module = _client_module(protocol)
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    @property
    def client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            kwargs = {"network_timeout": self.timeout, "connection_timeout": 10.0} if self.protocol == "http" else {}
            c = self._local.client = self.module.InferenceServerClient(self.url, **kwargs)
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()

    def parameters(self, model: str) -> dict[str, str]:
        """The string parameters of ``model``'s config (srdeploy's image models carry scale, tile, ...)."""
        if self.protocol == "grpc":
            config = self.client.get_model_config(model, as_json=True)["config"]
        else:
            config = self.client.get_model_config(model)
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def image_models(self) -> list[str]:
        """srdeploy image-level models that the server has ready."""
        index = self.client.get_model_repository_index(**({"as_json": True} if self.protocol == "grpc" else {}))
        if isinstance(index, dict):  # gRPC as JSON
            index = index.get("models", [])
        names = [m["name"] for m in index if m.get("state") == "READY"]
        return sorted(n for n in names if "tile_model" in self.parameters(n))

    def infer(self, model: str, lr: np.ndarray) -> np.ndarray:
        """LR uint8 [H, W, 3] -> SR uint8; RequestError with the server's message on an error response."""
        from tritonclient.utils import InferenceServerException

        x = self.module.InferInput("LR", list(lr.shape), "UINT8")
        x.set_data_from_numpy(np.ascontiguousarray(lr))
        try:
            result = self.client.infer(model, [x], outputs=[self.module.InferRequestedOutput("SR")],
                                       **({"client_timeout": self.timeout} if self.protocol == "grpc" else {}))
        except InferenceServerException as e:
            raise RequestError(e.message() or str(e)) from None
        return result.as_numpy("SR")


def _connect(args) -> tuple[Connection, str, int]:
    """The connection, the model and its scale; checked before any image is read."""
    from tritonclient.utils import InferenceServerException

    conn = Connection(args.url, args.protocol, args.timeout)
    try:
        if not conn.client.is_server_ready():
            raise UsageError(f"the server at {args.url} is not ready")
        model = args.model
        if model is None:
            found = conn.image_models()
            if len(found) != 1:
                raise UsageError(f"the server at {args.url} has {len(found)} srdeploy models "
                                 f"({', '.join(found) or 'none'}): choose one with --model")
            model = found[0]
        if not conn.client.is_model_ready(model):
            found = conn.image_models()
            raise UsageError(f"model {model!r} is not ready on {args.url}; srdeploy models there: "
                             f"{', '.join(found) or 'none'}")
        params = conn.parameters(model)
        if "scale" not in params or "tile_model" not in params:
            raise UsageError(f"model {model!r} on {args.url} is not an srdeploy image model "
                             f"(write one with python -m export.triton)")
        return conn, model, int(params["scale"])
    except InferenceServerException as e:
        conn.close()
        raise UsageError(f"cannot talk to a Triton server at {args.url} ({args.protocol}): "
                         f"{(e.message() or str(e)).splitlines()[0]}") from None
    except (OSError, ConnectionError) as e:
        conn.close()
        raise UsageError(f"cannot reach a Triton server at {args.url} ({args.protocol}): {e}") from None
    except UsageError:
        conn.close()
        raise


def upscale_remote(pixels: np.ndarray, conn: Connection, model: str, scale: int) -> np.ndarray:
    """``runtime.pipeline.upscale`` through the server: H×W×C float [0, 1] in, sH×sW×C out."""
    h, w, c = pixels.shape
    has_alpha = c in (2, 4)
    color = pixels[..., :c - 1] if has_alpha else pixels
    gray = color.shape[2] == 1
    rgb = np.repeat(color, 3, axis=2) if gray else color
    out = conn.infer(model, quantize(rgb, 8)).astype(np.float32) / 255.0
    if out.shape != (scale * h, scale * w, 3):
        raise RequestError(f"the server returned shape {out.shape}, expected {(scale * h, scale * w, 3)}")
    if gray:
        out = out.mean(axis=2, keepdims=True)
    if has_alpha:  # as runtime.pipeline.upscale: alpha never goes through the network
        alpha = Image.fromarray(np.ascontiguousarray(pixels[..., -1]))
        alpha = np.asarray(alpha.resize((w * scale, h * scale), Image.Resampling.BICUBIC), dtype=np.float32)
        out = np.concatenate([out, np.clip(alpha, 0, 1)[..., None]], axis=2)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Upscale images through a Triton server started by python -m runtime.serve.",
                    ["-i photo.png -o photo_x2.png                     # localhost:8000, its one model",
                     "-i lr/ -o sr/ --concurrency 8 --model nlsn_x2",
                     "-i lr/ -o sr/ --protocol grpc --url 127.0.0.1:8001"])
    add_io_arguments(p).title = "input and output (as python -m runtime.infer)"
    s = p.add_argument_group("server")
    s.add_argument("--url", default=None, help="host:port of the server (default: 127.0.0.1:8000 for http, "
                   "127.0.0.1:8001 for grpc)")
    s.add_argument("--protocol", choices=PROTOCOLS, default="http", help="(default: http)")
    s.add_argument("--model", default=None,
                   help="the image model, e.g. nlsn_x2 (default: the server's only srdeploy model)")
    s.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (default: 4)")
    s.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds per request (default: 600)")
    return p


_messages = Messages(PROG)
_say, _warn, _error = _messages.say, _messages.warn, _messages.error


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.url is None:
        args.url = "127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000"
    try:
        if args.concurrency < 1:
            raise UsageError(f"--concurrency must be ≥ 1, got {args.concurrency}")
        plan = make_plan(args)
        conn, model, scale = _connect(args)
    except SrdeployError as e:
        _error(str(e))
        return EXIT_USAGE
    try:
        try:
            name_outputs(plan, args, scale)
            check_outputs(plan, args, _messages)
        except SrdeployError as e:
            _error(str(e))
            return EXIT_USAGE
        if not plan.jobs:  # --skip-existing and every output exists
            summary(plan, [], [], 0.0, False, _messages)
            return EXIT_OK
        return _run(plan, conn, model, scale, args)
    finally:
        conn.close()


def _one(job: Job, conn: Connection, model: str, scale: int, args) -> list[str]:
    data = read_image(job.src)
    sr = upscale_remote(data.pixels, conn, model, scale)
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    notes = write_image(job.dst, sr, 8, overwrite=args.overwrite, quality=args.quality)
    if data.bit_depth == 16:
        notes.append("16-bit input served at 8 bits (the server takes UINT8)")
    return notes


def _run(plan: Plan, conn: Connection, model: str, scale: int, args) -> int:
    """``--concurrency`` requests in flight; runtime.infer's summary and exit codes."""
    written: list[Job] = []
    failed: list[Job] = []
    start = time.perf_counter()
    bar = tqdm(total=len(plan.jobs), unit="image", disable=True if len(plan.jobs) == 1 else None)
    pool = ThreadPoolExecutor(max_workers=args.concurrency)
    interrupted = False
    try:
        futures = {pool.submit(_one, job, conn, model, scale, args): job for job in plan.jobs}
        for future in as_completed(futures):
            job = futures[future]
            bar.update()
            try:
                notes = future.result()
            except RequestError as e:
                _error(f"{job.src}: the server refused it: {e}")
            except SrdeployError as e:  # unreadable input, an output that appeared meanwhile
                _error(str(e))
            except OSError as e:
                _error(f"cannot write {job.dst}: {e.strerror or e}")
            else:
                written.append(job)
                for note in notes:
                    _warn(f"{job.dst}: {note}")
                continue
            failed.append(job)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        interrupted = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - start
    summary(plan, written, failed, seconds, interrupted, _messages)
    _say(f"concurrency {args.concurrency}, {args.protocol} {args.url}, model {model}")
    if interrupted:
        return EXIT_INTERRUPTED
    if failed:
        return EXIT_PARTIAL if written else EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
