"""runtime.backends: one interface (every backend subclasses Backend and opens through its one error
translation), the metadata rule shared by the exported-file backends, lazy imports, and the torch
backend switching the CUDA kernels on. TensorRT engines cannot run here (no GPU): tests/test_trt.py
takes TrtBackend up to its refusal."""
import os
import subprocess
import sys

import onnx
import pytest
import torch

import models
from conftest import REPO, TINY_EDSR
from export import metadata
from export.onnx import export_model
from models.base import InputSizeError
from runtime.backends import (BACKENDS, Backend, BackendError, ExportedBackend, MetadataError, OrtBackend,
                              TorchBackend, TrtBackend, open_backend)
from runtime.backends import torch_backend


@pytest.fixture(scope="module")
def edsr_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backends") / "edsr_x2.onnx"
    export_model(models.build("edsr", 2, **TINY_EDSR), path, mode="onnx", check=False)
    return path


def with_metadata(src, dst, **changes):
    """A copy of the ONNX file ``src`` whose srdeploy metadata has ``changes`` (None: key removed)."""
    model = onnx.load(str(src))
    meta = {**metadata.read(model), **changes}
    metadata.write(model, {k: v for k, v in meta.items() if v is not None})
    onnx.save(model, str(dst))
    return dst


def test_every_backend_subclasses_the_interface_and_opens_through_it():
    classes = {kind: make() for kind, make in BACKENDS.items()}
    assert classes == {"torch": TorchBackend, "ort": OrtBackend, "trt": TrtBackend}
    for cls in classes.values():
        assert issubclass(cls, Backend)
        assert cls.open.__func__ is Backend.open.__func__, f"{cls.__name__} translates errors its own way"
    assert issubclass(OrtBackend, ExportedBackend) and issubclass(TrtBackend, ExportedBackend)


def test_importing_the_backends_loads_neither_onnxruntime_nor_tensorrt():
    code = ("import sys, runtime.backends, runtime.trt; "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'tensorrt_rtx', 'tensorrt_lean') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == "[]"


def test_runtime_trt_does_not_import_the_backends():
    code = "import sys, runtime.trt; print('runtime.backends' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("kind,name,content,expected", [
    ("torch", "none.pt", None, "weights file {path} not found"),
    ("torch", "junk.pt", b"not a checkpoint", "{path}: not a readable PyTorch checkpoint"),
    ("ort", "none.pt", None, "onnxruntime: {path}: no such weights file"),
    ("ort", "junk.onnx", b"\x00\x01junk", "onnxruntime: {path}: not a readable ONNX file"),
    ("trt", "none.engine", None, "engine {path} not found; build one with python -m runtime.build"),
    ("trt", "junk.engine", b"engine bytes", "{path}.json not found: engine {path} has no sidecar"),
])
def test_open_turns_each_failure_into_one_line(tmp_path, kind, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BackendError) as e:
        open_backend(kind, path)
    assert str(e.value).startswith(expected.format(path=path)) and "\n" not in str(e.value)


def test_open_checks_model_and_scale_against_the_file(edsr_onnx):
    with pytest.raises(BackendError, match=r"--model nlsn does not match .*edsr_x2.onnx, which holds edsr x2"):
        open_backend("ort", edsr_onnx, model="nlsn")
    assert open_backend("ort", edsr_onnx, model="EDSR", scale=2).name == "edsr"
    with pytest.raises(BackendError, match="unknown backend 'tvm'; available: torch, ort, trt"):
        open_backend("tvm", edsr_onnx)


def test_exported_file_metadata_one_rule(edsr_onnx, tmp_path):
    # model, scale and rgb_range are required: no default stands in for them
    bare = with_metadata(edsr_onnx, tmp_path / "bare.onnx", rgb_range=None, scale=None)
    with pytest.raises(MetadataError, match=r"bare.onnx: the srdeploy metadata lacks scale, rgb_range; export it again"):
        OrtBackend(bare)
    no_meta = tmp_path / "none.onnx"
    model = onnx.load(str(edsr_onnx))
    del model.metadata_props[:]
    onnx.save(model, str(no_meta))
    with pytest.raises(BackendError, match="has no srdeploy metadata .*python -m export.onnx"):
        open_backend("ort", no_meta)
    # the size rules default to "any size"
    free = OrtBackend(with_metadata(edsr_onnx, tmp_path / "free.onnx", size_multiple=None, min_pixels=None))
    assert (free.size_multiple, free.min_pixels, free.fixed_size) == (1, 1, None) and free.valid_size(3, 5) == (3, 5)
    ruled = OrtBackend(with_metadata(edsr_onnx, tmp_path / "ruled.onnx", size_multiple=4, min_pixels=64))
    assert ruled.valid_size(3, 5) == (8, 8) and ruled.valid_size(1, 30) == (4, 32)
    with pytest.raises(InputSizeError, match="cannot take 3x5; pad the input to 8x8"):
        ruled(torch.rand(1, 3, 3, 5))
    fixed = OrtBackend(with_metadata(edsr_onnx, tmp_path / "fixed.onnx", fixed_size=[8, 8]))
    assert fixed.valid_size(3, 5) == (8, 8)
    with pytest.raises(InputSizeError, match="takes 8x8 inputs only, got 9x5; tile the image or export with --dynamic"):
        fixed.valid_size(9, 5)


def test_torch_backend_on_cuda_switches_the_kernels_on(monkeypatch):
    """The layer that picks the device enables the srdeploy CUDA kernels (models no longer does)."""
    from plugins import kernels

    calls = []
    monkeypatch.setattr(kernels, "enable", lambda: calls.append("enable"))
    net = models.build("edsr", 2, **TINY_EDSR)
    TorchBackend(net, "cpu")
    assert calls == []  # a CPU backend leaves them alone
    monkeypatch.setattr(torch_backend, "resolve_device", lambda device: torch.device("cuda"))  # no GPU here
    monkeypatch.setattr(net, "to", lambda *a, **k: net)
    backend = TorchBackend(net, "cuda")
    assert calls == ["enable"] and backend.device == "cuda"
