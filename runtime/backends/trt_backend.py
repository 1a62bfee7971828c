"""TensorRT backend: run an engine built by ``python -m runtime.build``.

    backend = TrtBackend("nlsn_x2.engine")          # checks the sidecar, loads the plugins, then the engine
    y = backend(x)                                    # x: float32 [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW]
    tile, pad = backend.tile_for(0, 32)               # the largest --tile the engine's profile takes

The engine tools it relies on (sidecars, targets, the plugin library, machine info) live in
:mod:`runtime.trt`, which ``runtime.build`` shares; this module is the only one that runs an engine.
"""
from __future__ import annotations

from pathlib import Path

import torch

from runtime import trt as rtrt

from .base import ExportedBackend

__all__ = ["TrtBackend", "tile_for_profile", "fit_to_profile"]


def _round_down(x: int, m: int) -> int:
    return x // m * m


def tile_for_profile(max_hw: tuple[int, int], tile: int, tile_pad: int, multiple: int = 1) -> tuple[int, int]:
    """The ``(tile, tile_pad)`` to use with an engine whose profile allows inputs up to ``max_hw``.

    A tile sent to the network is its core (≤ tile) plus ``tile_pad`` context on each side, grown to a
    multiple of ``multiple``: it must fit ``max_hw``. ``tile`` 0 (whole image) or too large becomes the
    largest that fits; ``tile_pad`` shrinks (to at most a quarter of the side) only if nothing fits."""
    side = min(max_hw)
    pad = tile_pad
    if side - 2 * pad < max(multiple, 8):
        pad = max(0, min(pad, side // 4))
    largest = _round_down(side - 2 * pad, multiple)
    if largest <= 0:
        raise ValueError(f"the engine's largest input {max_hw[0]}x{max_hw[1]} leaves no room for tiles")
    return (largest if tile <= 0 or tile > largest else tile), pad


def fit_to_profile(hw: tuple[int, int], min_hw: tuple[int, int], max_hw: tuple[int, int], where: str = "engine") -> tuple[int, int]:
    """(h, w) grown to at least the profile's minimum; ValueError beyond its maximum."""
    h, w = hw
    if h > max_hw[0] or w > max_hw[1]:
        raise ValueError(f"{where} takes inputs up to {max_hw[0]}x{max_hw[1]}, got {h}x{w}: use --tile (runtime.infer "
                         f"sizes tiles to the engine's profile) or rebuild with larger --maxShapes")
    return max(h, min_hw[0]), max(w, min_hw[1])


class TrtBackend(ExportedBackend):
    """A TensorRT engine built by ``python -m runtime.build``, as a runtime backend.

    ``TrtBackend(engine, device="cuda", plugin_library=None)``: reads and checks the sidecar
    (:func:`runtime.trt.verify_sidecar`), loads the plugin library when the engine has custom ops,
    deserialises the engine. ``valid_size(h, w)`` applies the model's size rules (from the sidecar's
    copy of the ONNX metadata) and the profile's minimum; ``tile_for(tile, tile_pad)`` sizes tiles to the
    profile's maximum; ``backend(x)`` runs one tile. The sidecar's target picks the package (tensorrt or
    tensorrt_rtx); the engine, its context and every execution live on ``device`` (``cuda:N``; plain
    ``cuda`` is torch's current device).
    """

    default_device = "cuda"
    open_errors = (FileNotFoundError,)

    def __init__(self, engine: str | Path, device: str = "cuda", *, plugin_library: str | Path | None = None,
                 machine: rtrt.MachineInfo | None = None):
        self.path = Path(engine)
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {self.path} not found; build one with python -m runtime.build")
        self.sidecar = rtrt.read_sidecar(self.path)
        target = self.sidecar.target
        if target not in rtrt.TARGETS:
            raise rtrt.SidecarError(f"{rtrt.sidecar_path(self.path)}: unknown target {target!r} "
                                    f"(known: {', '.join(rtrt.TARGETS)})")
        self._use_metadata(self.sidecar.model, "build it from a file exported with python -m export.onnx")
        trt = rtrt.import_tensorrt(target)
        index = torch.device(device if str(device).startswith("cuda") else "cuda").index
        if machine is None:
            try:
                machine = rtrt.machine_info(index, target)
            except rtrt.TensorRTUnavailable as e:
                raise rtrt.TensorRTUnavailable(f"engine {self.path} ({self.sidecar.describe()}) cannot run here: "
                                               f"{e}") from None
        plugin = rtrt.find_plugin_library(plugin_library, required=False) if self.sidecar.plugin_sha256 else None
        rtrt.verify_sidecar(self.sidecar, machine, plugin, engine=self.path)
        if plugin is not None:
            rtrt.load_plugin_library(plugin, trt)
        self.device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        self.precision = self.sidecar.precision
        self._trt = trt
        self._logger = rtrt.make_logger(trt)
        with torch.cuda.device(self.device):  # the engine and its context belong to this GPU
            self.runtime = trt.Runtime(self._logger)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise rtrt.TensorRTError(f"{rtrt.TARGETS[target].title} could not deserialise {self.path} (see the "
                                         f"log above); {rtrt.rebuild_hint(self.sidecar, self.path)}")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise rtrt.TensorRTError(f"{self.path}: an srdeploy engine has one input and one output, got {inputs} "
                                     f"-> {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        lo, _, hi = self.engine.get_tensor_profile_shape(self._input, 0)
        self.min_hw = (int(lo[2]), int(lo[3]))
        self.max_hw = (int(hi[2]), int(hi[3]))
        self._dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in (self._input, self._output)}

    @classmethod
    def _open(cls, path: Path, *, model=None, scale=None, device="cuda") -> "TrtBackend":
        """``path`` is the engine here (runtime.infer --engine); TensorRT runs on CUDA whatever ``device`` says."""
        return cls(path, device=device if str(device).startswith("cuda") else "cuda")

    def __repr__(self) -> str:
        return (f"TrtBackend({str(self.path)!r}, {self.name} x{self.scale}, {self.precision}, "
                f"inputs {self.min_hw[0]}x{self.min_hw[1]}..{self.max_hw[0]}x{self.max_hw[1]})")

    def _torch_dtype(self, dtype):
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        if dtype not in table:
            raise rtrt.TensorRTError(f"{self.path}: unsupported I/O type {dtype}; srdeploy engines take and "
                                     f"give float32 or float16")
        return table[dtype]

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """The model's (or the fixed-size file's) rule, then grown to the profile's minimum."""
        return fit_to_profile(super().valid_size(h, w), self.min_hw, self.max_hw, where=str(self.path))

    def tile_for(self, tile: int, tile_pad: int) -> tuple[int, int]:
        return tile_for_profile(self.max_hw, tile, tile_pad, self.size_multiple)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        with torch.cuda.device(self.device):  # the context runs on the engine's GPU, whatever is current
            feed = (x.to(self.device, torch.float32) * self.rgb_range).to(self._dtypes[self._input]).contiguous()
            if not self.context.set_input_shape(self._input, tuple(feed.shape)):
                raise ValueError(f"{self.path}: input shape {tuple(feed.shape)} is outside the engine's profile "
                                 f"{self.min_hw}..{self.max_hw}")
            out_shape = tuple(self.context.get_tensor_shape(self._output))
            out = torch.empty(out_shape, dtype=self._dtypes[self._output], device=self.device)
            self.context.set_tensor_address(self._input, feed.data_ptr())
            self.context.set_tensor_address(self._output, out.data_ptr())
            # On torch's current stream of that GPU: ordered with the copies around it, memory stays valid.
            if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed (see the log above)")
            return (out.float() / self.rgb_range).cpu()
