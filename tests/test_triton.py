"""Serving with Triton: a real ``tritonserver`` (nvidia-pytriton's binary, Python backend) started by
``python -m runtime.serve`` on a repository written by ``export.triton`` for the bundled NLSN x2 and
CSNLN x2, on loopback ports chosen free; asked by ``runtime.client`` and tritonclient directly.

Small images and tiles (16 LR pixels + 4 of context) keep the file bounded on a loaded 2-core machine.
What only the official Triton container can run (the onnxruntime and tensorrt_plan tile backends) is
checked here as far as a config goes: it parses into Triton's ModelConfig.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.http", reason="tritonclient not installed (pip install -e '.[dev]')")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed (pip install -e '.[dev]')")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from export import triton as export_triton  # noqa: E402
from runtime import client, serve  # noqa: E402
from runtime.imageio import quantize, read_image  # noqa: E402
from runtime.pipeline import load_upscaler, upscale  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TILE, TILE_PAD = 16, 4
MAX_PIXELS = 64 * 64
SAMPLE = REPO / "runtime" / "samples" / "sample.png"
SIZES = [(10, 12), (24, 20), (30, 34)]  # the first is smaller than a tile (one window, the whole image)

if serve.bundled_tritonserver() is None:
    pytest.skip("no tritonserver binary: pip install nvidia-pytriton==0.7.0", allow_module_level=True)


def crop(h, w, k=0):
    img = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return np.ascontiguousarray(img[3 * k:3 * k + h, 5 * k:5 * k + w])


def reference(backend, lr):
    """What python -m runtime.infer writes for this 8-bit RGB image with the same tiling."""
    return quantize(upscale(lr.astype(np.float32) / 255.0, backend, tile=TILE, tile_pad=TILE_PAD), 8)


@pytest.fixture(scope="module")
def backends():
    return {m: load_upscaler(m, 2) for m in ("nlsn", "csnln")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m runtime.serve`` on NLSN x2 + CSNLN x2; SIGTERM at the end, whatever happened."""
    root = tmp_path_factory.mktemp("triton")
    repo = export_triton.write_repository(root / "repo", export_triton.RepositoryOptions(
        model="nlsn", scale=2, tile=TILE, tile_pad=TILE_PAD, max_pixels=MAX_PIXELS, image_instances=2,
        max_queue_delay_us=20000, torch_threads=1))
    other = export_triton.write_repository(root / "csnln", export_triton.RepositoryOptions(
        model="csnln", scale=2, tile=TILE, tile_pad=TILE_PAD, max_pixels=MAX_PIXELS, image_instances=1,
        torch_threads=1))
    for name in export_triton.model_names("csnln", 2):  # one server for both models
        shutil.copytree(other / name, repo / name)
    ports = {k: serve.free_port() for k in ("http", "grpc", "metrics")}
    log = root / "server.log"
    cmd = [sys.executable, "-m", "runtime.serve", "--repository", str(repo), "--log", str(log),
           "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
           "--metrics-port", str(ports["metrics"])]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 240
        while not _ready(ports["http"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"runtime.serve did not get ready:\n{proc.stdout.read()}\n"
                            f"{log.read_text()[-3000:] if log.exists() else ''}")
            time.sleep(0.5)
        yield {"proc": proc, "repo": repo, "root": root,
               "http": f"127.0.0.1:{ports['http']}", "grpc": f"127.0.0.1:{ports['grpc']}",
               "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                pytest.fail(f"runtime.serve did not stop on SIGTERM:\n{out}")
            assert proc.returncode == 0, out
            assert "server stopped (status 0)" in out, out


def _ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _infer_http(url, model, array, dtype="UINT8"):
    c = httpclient.InferenceServerClient(url)
    try:
        x = httpclient.InferInput("LR", list(array.shape), dtype)
        x.set_data_from_numpy(array)
        return c.infer(model, [x]).as_numpy("SR")
    finally:
        c.close()


def test_ready_metrics_and_both_models(server):
    with urllib.request.urlopen(server["metrics"], timeout=10) as r:
        metrics = r.read().decode()
    assert "nv_inference_request_success" in metrics
    g = grpcclient.InferenceServerClient(server["grpc"])
    try:
        assert g.is_server_live() and g.is_server_ready()
        for name in ("nlsn_x2", "nlsn_x2_tile", "csnln_x2", "csnln_x2_tile"):
            assert g.is_model_ready(name), name
        tile = g.get_model_config("nlsn_x2_tile", as_json=True)["config"]
        assert int(tile["max_batch_size"]) == 8 and "dynamic_batching" in tile
    finally:
        g.close()


@pytest.mark.parametrize("model", ["nlsn", "csnln"])
def test_outputs_equal_runtime_infer(server, backends, model):
    """Every size, incl. one smaller than a tile: bit-equal to runtime.infer's pipeline, HTTP and gRPC."""
    sizes = SIZES if model == "nlsn" else SIZES[:2]
    for k, (h, w) in enumerate(sizes):
        lr = crop(h, w, k)
        want = reference(backends[model], lr)
        got = _infer_http(server["http"], f"{model}_x2", lr)
        assert got.shape == (2 * h, 2 * w, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want), f"{model} {h}x{w}: max |diff| {np.abs(got.astype(int) - want).max()}"
    conn = client.Connection(server["grpc"], "grpc")
    try:
        assert np.array_equal(conn.infer(f"{model}_x2", lr), want)
    finally:
        conn.close()


def test_client_cli_8_concurrent_and_tiles_batched(server, backends, tmp_path, capsys):
    """runtime.client, 8 requests in flight over a folder: every output is runtime.infer's; the tile
    model's statistics show batches of more than one tile."""
    src, dst = tmp_path / "lr", tmp_path / "sr"
    src.mkdir()
    want = {}
    for i in range(16):
        h, w = SIZES[1 + i % 2]
        lr = crop(h, w, i % 3)
        Image.fromarray(lr).save(src / f"im{i:02d}.png")
        want[f"im{i:02d}_x2.png"] = reference(backends["nlsn"], lr)
    code = client.main(["-i", str(src), "-o", str(dst), "--url", server["http"], "--model", "nlsn_x2",
                        "--concurrency", "8"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "python -m runtime.client: done: 16 written, 0 skipped (exist), 0 failed" in err and "images/s" in err
    for name, sr in want.items():
        assert np.array_equal(np.asarray(Image.open(dst / name)), sr), name
    c = httpclient.InferenceServerClient(server["http"])
    try:
        stats = c.get_inference_statistics("nlsn_x2_tile")["model_stats"][0]["batch_stats"]
    finally:
        c.close()
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}
    assert max(sizes) > 1, f"no tile batch larger than 1: {sizes}"

    # Outputs exist now: the client refuses before sending anything, as runtime.infer does.
    assert client.main(["-i", str(src), "-o", str(dst), "--url", server["http"], "--model", "nlsn_x2"]) == 2
    assert "exists" in capsys.readouterr().err


def test_bad_requests_get_errors_and_the_server_stays_up(server):
    url = server["http"]
    good = crop(12, 14)
    bad = {
        "wrong dtype": (good.astype(np.float32), "FP32", "data-type"),
        "wrong rank": (good[..., 0].copy(), "UINT8", "shape"),
        "wrong channels": (np.zeros((12, 14, 4), np.uint8), "UINT8", "shape"),
        "empty image": (np.zeros((0, 14, 3), np.uint8), "UINT8", "empty image"),
        "over the pixel limit": (np.zeros((65, 64, 3), np.uint8), "UINT8", "limit"),
    }
    for what, (array, dtype, words) in bad.items():
        with pytest.raises(InferenceServerException) as e:
            _infer_http(url, "nlsn_x2", array, dtype)
        assert words in str(e.value), f"{what}: {e.value}"
    with pytest.raises(InferenceServerException, match="unknown|not found"):
        _infer_http(url, "edsr_x9", good)
    assert server["proc"].poll() is None
    assert _infer_http(url, "nlsn_x2", good).shape == (24, 28, 3)


def test_client_errors_are_one_line_exit_2(server, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(crop(12, 14)).save(img)
    dead = f"127.0.0.1:{serve.free_port()}"
    cases = [
        (["--url", dead], "cannot"),
        (["--url", server["http"], "--model", "nope_x2"], "not ready"),
        (["--url", server["http"]], "2 srdeploy models"),  # two image models: --model needed
        (["--url", server["http"], "--model", "nlsn_x2_tile"], "not an srdeploy image model"),
    ]
    for extra, words in cases:
        assert client.main(["-i", str(img), "-o", str(tmp_path / "b.png"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "b.png").exists()


def test_configs_for_the_official_container_parse(tmp_path):
    """onnxruntime and tensorrt_plan tile models: their configs parse into ModelConfig (a live run
    needs the official Triton container, which cannot run here)."""
    from tritonclient.grpc import model_config_pb2

    import onnx
    from onnx import TensorProto, helper

    # Stand-in graph with the metadata of an --ops onnx export (a real export of NLSN takes minutes
    # on a loaded CI machine and is tested in test_export.py): only the config is checked here.
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3, "h", "w"]) for n in ("input", "output")]
    graph = onnx.helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["output"])],
                                                     "stand_in", io[:1], io[1:]))
    meta = {"model": "nlsn", "scale": 2, "rgb_range": 255.0, "size_multiple": 1, "min_pixels": 144, "ops": "onnx"}
    graph.metadata_props.append(onnx.StringStringEntryProto(key="srdeploy", value=json.dumps(meta)))
    onnx.save(graph, tmp_path / "nlsn_x2.onnx")
    onnx_repo = export_triton.write_repository(tmp_path / "ort", export_triton.RepositoryOptions(
        model="nlsn", scale=2, tile_backend="onnxruntime", onnx=str(tmp_path / "nlsn_x2.onnx"), max_batch_size=4,
        tile_instances=2, max_queue_size=64, queue_timeout_us=500000))
    meta["ops"] = "plugin"
    graph.metadata_props[0].value = json.dumps(meta)
    onnx.save(graph, tmp_path / "plugin.onnx")
    with pytest.raises(export_triton.TritonExportError, match="--ops onnx"):
        export_triton.write_repository(tmp_path / "ort2", export_triton.RepositoryOptions(
            tile_backend="onnxruntime", onnx=str(tmp_path / "plugin.onnx")))
    engine = tmp_path / "nlsn_x2.engine"
    engine.write_bytes(b"stand-in: only the config is checked here")
    plugin = tmp_path / "libsrdeploy_trt_plugins.so"
    plugin.write_bytes(b"stand-in")
    plan_repo = export_triton.write_repository(tmp_path / "trt", export_triton.RepositoryOptions(
        model="nlsn", scale=2, tile_backend="tensorrt_plan", engine=str(engine), plugin_library=str(plugin),
        device="cuda"))
    for repo, field, value, file in ((onnx_repo, "backend", "onnxruntime", "model.onnx"),
                                     (plan_repo, "platform", "tensorrt_plan", "model.plan")):
        tile = export_triton.parse_config((repo / "nlsn_x2_tile" / "config.pbtxt").read_text())
        assert getattr(tile, field) == value and tile.default_model_filename == file
        assert (repo / "nlsn_x2_tile" / "1" / file).is_file()
        assert tile.max_batch_size >= 1 and tile.HasField("dynamic_batching")
        assert [d for d in tile.input[0].dims] == [3, -1, -1] and tile.input[0].name == "input"
        image = export_triton.parse_config((repo / "nlsn_x2" / "config.pbtxt").read_text())
        assert image.backend == "python" and image.parameters["tile_input_range"].string_value == "255.0"
    tile = export_triton.parse_config((onnx_repo / "nlsn_x2_tile" / "config.pbtxt").read_text())
    assert tile.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert tile.instance_group[0].count == 2
    plan = export_triton.parse_config((plan_repo / "nlsn_x2_tile" / "config.pbtxt").read_text())
    assert plan.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert json.loads((plan_repo / export_triton.MANIFEST).read_text())["plugin_library"] == plugin.name
    assert (plan_repo / plugin.name).is_file()


def test_export_refusals(tmp_path, capsys):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for argv, words in (
        (["-o", str(out)], "exists"),
        (["-o", str(out), "--overwrite"], "not a repository written by"),
        (["-o", str(tmp_path / "r2"), "--tile-backend", "tensorrt_plan"], "needs --engine"),
        (["-o", str(tmp_path / "r3"), "--weights", str(tmp_path / "none.pt")], "not found"),
    ):
        assert export_triton.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(export_triton.TritonExportError, match="does not parse"):
        export_triton.parse_config('name: "x" max_batch_size: "eight"')


def test_client_alpha_and_gray_follow_runtime_infer(server, backends, tmp_path, capsys):
    """RGBA: colour through the server, alpha upscaled by the client as runtime.pipeline does: equal.
    Gray: sent as RGB, the three 8-bit answers averaged (runtime.infer averages before rounding): ±1."""
    rgba = np.asarray(Image.open(SAMPLE).convert("RGBA"))[:14, :18].copy()
    rgba[..., 3] = np.arange(18, dtype=np.uint8)[None, :] * 14
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "g.png")
    for name in ("a", "g"):
        src = tmp_path / f"{name}.png"
        assert client.main(["-i", str(src), "-o", str(tmp_path / f"{name}_sr.png"), "--url", server["http"],
                            "--model", "nlsn_x2"]) == 0, capsys.readouterr().err
        got = np.asarray(Image.open(tmp_path / f"{name}_sr.png")).astype(int)
        want = quantize(upscale(read_image(src).pixels, backends["nlsn"], tile=TILE, tile_pad=TILE_PAD), 8)
        want = want[..., 0] if want.shape[2] == 1 else want
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= (0 if name == "a" else 1), name
