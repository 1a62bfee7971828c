"""``python -m runtime.serve``: run a real Triton Inference Server on an srdeploy model repository.

The server is the ``tritonserver`` binary: by default the one bundled with ``nvidia-pytriton`` (Triton
2.51 with the Python backend; PyTriton's own Python layer is not used), or ``--tritonserver PATH`` (an
official container's ``/opt/tritonserver/bin/tritonserver``). It serves ``--repository DIR``, or one
written for ``--model/--scale`` by ``export.triton`` into a temporary folder (removed on exit). It waits
for readiness, prints the endpoints, serves until Ctrl-C or SIGTERM, then stops the server cleanly.
Loopback only unless ``--address`` says otherwise.

``TritonServer`` is the same thing as a context manager, for tests and benchmarks.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from models.cli import make_parser
from models.errors import SrdeployError

PROG = "python -m runtime.serve"
REPO = Path(__file__).resolve().parents[1]


class ServeError(SrdeployError, RuntimeError):
    """The server cannot be started as asked (one line, exit status 2)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bundled_tritonserver() -> Path | None:
    """``tritonserver`` from the nvidia-pytriton wheel, or None when the wheel is not installed."""
    # Found, not imported: only the wheel's files are used, never its Python layer (or its dependencies).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
    return path if path.is_file() else None


def _python_backend_dir(dist: Path, work: Path) -> Path:
    """A backend folder whose Python backend has the stub of this interpreter's Python version.

    The wheel ships one stub per Python version beside the backend; links, not copies (the wheel's
    own launcher copies the whole server for this)."""
    stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeError(f"nvidia-pytriton has no Python backend stub for Python "
                         f"{sys.version_info[0]}.{sys.version_info[1]} ({stub} missing)")
    python = work / "backends" / "python"
    python.mkdir(parents=True)
    for f in (dist / "backends" / "python").iterdir():
        (python / f.name).symlink_to(f)
    (python / stub.name).symlink_to(stub)
    return work / "backends"


def python_path() -> str:
    """What the Python backend's stub needs on sys.path: this project and this interpreter's packages."""
    paths = [str(REPO)] + site.getsitepackages() + [site.getusersitepackages()]
    return os.pathsep.join(p for p in dict.fromkeys(paths) if os.path.isdir(p))


class TritonServer:
    """A ``tritonserver`` process on ``repository``; ``with TritonServer(...) as s:`` starts it and
    waits until it is ready, and always stops it on exit."""

    def __init__(self, repository: str | Path, *, address: str = "127.0.0.1", http_port: int = 0,
                 grpc_port: int = 0, metrics_port: int = 0, tritonserver: str | Path | None = None,
                 plugin_library: str | Path | None = None, log: str | Path | None = None,
                 extra_env: dict[str, str] | None = None, exit_timeout: int = 30):
        self.repository = Path(repository)
        self.address = address
        self.http_port = http_port or free_port(address)
        self.grpc_port = grpc_port or free_port(address)
        self.metrics_port = metrics_port or free_port(address)
        self.tritonserver = Path(tritonserver) if tritonserver else bundled_tritonserver()
        self.plugin_library = plugin_library
        self.log_path = Path(log) if log else None
        self.extra_env = dict(extra_env or {})
        self.exit_timeout = exit_timeout  # Triton's own: in-flight requests, then unloading (stubs exit)
        self.process: subprocess.Popen | None = None
        self._work: Path | None = None
        self._log = None

    # endpoints, as clients write them
    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = [str(self.tritonserver), f"--model-repository={self.repository}",
               f"--http-address={self.address}", f"--http-port={self.http_port}",
               f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
               "--allow-metrics=true", "--strict-readiness=true", f"--exit-timeout-secs={self.exit_timeout}",
               "--disable-auto-complete-config"]  # configs are complete; auto-complete starts one more stub per model
        if self.plugin_library:
            cmd.append(f"--backend-config=tensorrt,plugins={Path(self.plugin_library).resolve()}")
        return cmd

    def start(self, timeout: float = 120.0) -> "TritonServer":
        if self.tritonserver is None:
            raise ServeError("no tritonserver binary: pip install nvidia-pytriton==0.7.0 (it bundles one) "
                             "or pass --tritonserver PATH")
        if not self.tritonserver.is_file():
            raise ServeError(f"--tritonserver {self.tritonserver} not found")
        if not self.repository.is_dir():
            raise ServeError(f"model repository {self.repository} not found")
        env = dict(os.environ, SRDEPLOY_PYTHONPATH=python_path(), **self.extra_env)
        cmd = self.command()
        bundled = bundled_tritonserver()
        if bundled is not None and self.tritonserver.resolve() == bundled.resolve():
            dist = bundled.parents[1]
            self._work = Path(tempfile.mkdtemp(prefix="srdeploy-triton-"))
            cmd.append(f"--backend-directory={_python_backend_dir(dist, self._work)}")
            cmd.append(f"--cache-directory={dist / 'caches'}")
            libs = dist.parents[1] / "nvidia_pytriton.libs"
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [env.get("LD_LIBRARY_PATH"), str(libs)]))
        self._log = open(self.log_path, "ab") if self.log_path else tempfile.TemporaryFile()
        # Own process group: a Ctrl-C in the terminal reaches us, and we stop the server ourselves.
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(f"tritonserver exited with status {self.process.returncode} before it was ready; "
                                 f"its last lines:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise ServeError(f"tritonserver not ready after {timeout:.0f} s; its last lines:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM (Triton finishes in-flight requests and unloads), then SIGKILL if it hangs."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(self.exit_timeout + 15)
                except subprocess.TimeoutExpired:
                    self._kill()
                except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, but leave nothing running
                    self._kill()
                    self._cleanup()
                    raise
            code = self.process.returncode
        self._cleanup()
        return code

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its backend stubs (its own group)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- command line

def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from export.triton import add_repository_arguments

    p = make_parser(PROG, "Serve NLSN/CSNLN/EDSR with a real Triton Inference Server (HTTP, gRPC, metrics).",
                    ["                                     # bundled NLSN x2, ports 8000/8001/8002",
                     "--model csnln --scale 2 --tile 96",
                     "--repository triton_repo             # written by python -m export.triton",
                     "--repository triton_repo --tritonserver /opt/tritonserver/bin/tritonserver"],
                    "then: python -m runtime.client -i photo.png -o photo_x2.png --model nlsn_x2")
    s = p.add_argument_group("server")
    s.add_argument("--repository", metavar="DIR",
                   help="model repository from python -m export.triton (default: one written for "
                        "--model/--scale into a temporary folder, removed on exit)")
    s.add_argument("--tritonserver", metavar="PATH", help="the server binary (default: the one of nvidia-pytriton)")
    s.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, loopback only; 0.0.0.0 for every interface)")
    s.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default: 8000; 0 picks a free one)")
    s.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default: 8001; 0 picks a free one)")
    s.add_argument("--metrics-port", type=_port, default=8002,
                   help="Prometheus metrics port (default: 8002; 0 picks a free one)")
    s.add_argument("--log", metavar="FILE", help="append the server's log to FILE (default: kept in memory, "
                   "its end shown if the server fails)")
    s.add_argument("--exit-timeout", type=int, default=30, metavar="S",
                   help="on Ctrl-C/SIGTERM, seconds Triton gives in-flight requests and model unloading (default: 30)")
    s.add_argument("--startup-timeout", type=float, default=300.0, metavar="S",
                   help="seconds to wait for the server to be ready (default: 300)")
    add_repository_arguments(p)
    return p


def _error(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    from export.triton import TritonExportError, options_from_args, read_manifest, write_repository

    args = build_parser().parse_args(argv)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    own_repo = None
    server = None
    try:
        if args.repository:
            repository = Path(args.repository)
            try:
                manifest = read_manifest(repository)
            except TritonExportError:  # a repository of the user's own: serve it as it is
                manifest = {}
        else:
            own_repo = Path(tempfile.mkdtemp(prefix="srdeploy-triton-repo-"))
            repository = write_repository(own_repo / "models", options_from_args(args))
            manifest = read_manifest(repository)
        plugin = args.plugin_library or (repository / manifest["plugin_library"] if manifest.get("plugin_library")
                                         else None)
        server = TritonServer(repository, address=args.address, http_port=args.http_port, grpc_port=args.grpc_port,
                              metrics_port=args.metrics_port, tritonserver=args.tritonserver,
                              plugin_library=plugin, log=args.log, exit_timeout=args.exit_timeout)
        print(f"{PROG}: starting {server.tritonserver} on {repository} ...", file=sys.stderr)
        server.start(timeout=args.startup_timeout)
        model = manifest.get("image_model", "MODEL")
        what = (f"{model} (LR UINT8 [H, W, 3] -> SR UINT8; tiles batched by {manifest['tile_model']})"
                if manifest else f"the models of {repository}")
        print(f"serving {what}\n"
              f"  HTTP     {server.http_url}\n  gRPC     {server.grpc_url}\n  metrics  {server.metrics_url}\n"
              f"client: python -m runtime.client -i IMAGE -o OUT --url {server.http_url} --model {model}\n"
              "Ctrl-C or SIGTERM stops the server", flush=True)
        while server.process.poll() is None:
            time.sleep(0.5)
        return _error(f"tritonserver exited with status {server.process.returncode}; its last lines:\n{server.log_tail()}")
    except KeyboardInterrupt:
        if server is not None and server.process is not None:
            print(f"{PROG}: stopping the server ...", file=sys.stderr)
        return 0
    except SrdeployError as e:  # a repository that cannot be written, a server that cannot start
        return _error(str(e))
    finally:
        try:
            if server is not None:  # a second Ctrl-C/SIGTERM during this kills the server instead of waiting
                code = server.stop()
                if code is not None:
                    print(f"{PROG}: server stopped (status {code})", file=sys.stderr)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if own_repo is not None:
                shutil.rmtree(own_repo, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
