"""srdeploy image-level model for Triton's Python backend (written by ``python -m export.triton``).

LR UINT8 [H, W, 3] in, SR UINT8 [s·H, s·W, 3] out. The image is cut into tiles and blended back by
``runtime.pipeline.upscale``, the same code as ``python -m runtime.infer``; the tiles go to the
tile-level model through business-logic scripting (BLS), all at once, and Triton's dynamic batcher
packs them, with the tiles of concurrent requests, into batches.
"""
import asyncio
import json
import os
import sys

# The backend's stub embeds its own interpreter, which ignores PYTHONPATH: runtime.serve passes the
# project and its site-packages in SRDEPLOY_PYTHONPATH (unset in a container where srdeploy is installed).
sys.path[:0] = [p for p in os.environ.get("SRDEPLOY_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from models.base import valid_size  # noqa: E402
from runtime.imageio import quantize  # noqa: E402
from runtime.pipeline import upscale  # noqa: E402


class Tiles:
    """An srdeploy backend (the runtime.backends contract) that does not run a network itself.

    ``upscale`` is called twice per image: first with ``record`` (each tile it cuts is kept and a
    placeholder returned), then, once the tile model has answered every tile, with ``replay`` (the
    answers handed back in the same order). The tiles of one image thus travel to the tile model
    together and are batched there, and tiling and blending stay ``upscale``'s own code.
    """

    def __init__(self, name: str, scale: int, size_multiple: int, min_pixels: int):
        self.name, self.scale = name, scale
        self.size_multiple, self.min_pixels = size_multiple, min_pixels
        self.tiles, self.results = [], None

    def valid_size(self, h, w):
        return valid_size(h, w, self.size_multiple, self.min_pixels)

    def __call__(self, x):
        if self.results is None:
            self.tiles.append(x)
            return torch.zeros(x.shape[0], x.shape[1], self.scale * x.shape[2], self.scale * x.shape[3])
        return self.results.pop(0)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.arch, self.scale = p["arch"], int(p["scale"])
        self.size_multiple, self.min_pixels = int(p["size_multiple"]), int(p["min_pixels"])
        self.tile_model = p["tile_model"]
        self.input_name, self.output_name = p["tile_input"], p["tile_output"]
        self.input_range = np.float32(p["tile_input_range"])  # 1, or the network's rgb_range for raw graphs
        self.tile, self.tile_pad = int(p["tile"]), int(p["tile_pad"])
        self.max_pixels = int(p["max_pixels"])

    def _check(self, lr):
        # dtype, rank and channel count are checked by Triton against config.pbtxt before this point
        h, w = lr.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"empty image ({h}x{w}): LR must be UINT8 [H, W, 3] with H, W ≥ 1")
        if h * w > self.max_pixels:
            raise ValueError(f"image of {h}x{w} = {h * w} pixels is over this server's limit of "
                             f"{self.max_pixels} LR pixels (runtime.serve --max-pixels); send a smaller image")

    async def _infer(self, x):
        tile = pb_utils.Tensor(self.input_name, np.ascontiguousarray(x.numpy() * self.input_range))
        request = pb_utils.InferenceRequest(model_name=self.tile_model, inputs=[tile],
                                            requested_output_names=[self.output_name])
        response = await request.async_exec()
        if response.has_error():
            raise RuntimeError(f"tile model {self.tile_model}: {response.error().message()}")
        y = pb_utils.get_output_tensor_by_name(response, self.output_name).as_numpy()
        return torch.from_numpy(np.array(y, dtype=np.float32) / self.input_range)

    async def _upscale(self, lr):
        img = lr.astype(np.float32) / 255.0  # as runtime.imageio.read_image for an 8-bit image
        tiles = Tiles(self.arch, self.scale, self.size_multiple, self.min_pixels)
        upscale(img, tiles, tile=self.tile, tile_pad=self.tile_pad)
        # Sent grouped by shape: Triton's batcher closes a batch at the first tile of another shape.
        order = sorted(range(len(tiles.tiles)), key=lambda i: tuple(tiles.tiles[i].shape))
        answers = await asyncio.gather(*(self._infer(tiles.tiles[i]) for i in order))
        tiles.results = [None] * len(order)
        for i, y in zip(order, answers):
            tiles.results[i] = y
        return quantize(upscale(img, tiles, tile=self.tile, tile_pad=self.tile_pad), 8)

    async def execute(self, requests):
        responses = []
        for request in requests:
            try:
                lr = pb_utils.get_input_tensor_by_name(request, "LR").as_numpy()
                self._check(lr)
                sr = await self._upscale(lr)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SR", sr)]))
            except (ValueError, RuntimeError) as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
