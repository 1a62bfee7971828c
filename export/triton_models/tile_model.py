"""srdeploy tile-level model for Triton's Python backend (written by ``python -m export.triton``).

``input`` FP32 [B, 3, h, w] in [0, 1] -> ``output`` FP32 [B, 3, s·h, s·w], run by an srdeploy backend
(torch, onnxruntime or a TensorRT engine) on the file in this version folder. The requests that
Triton's dynamic batcher hands over together are run as one batch per tile shape.
"""
import json
import os
import sys

# See image_model.py: the stub's interpreter ignores PYTHONPATH.
sys.path[:0] = [p for p in os.environ.get("SRDEPLOY_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from runtime.backends import open_backend  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = {k: v["string_value"] for k, v in config["parameters"].items()}
        threads = int(p.get("torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        path = os.path.join(args["model_repository"], args["model_version"], p["file"])
        self.backend = open_backend(p["backend"], path, device=p["device"])
        self.batched = p["backend"] != "trt"  # an engine's profile may allow one tile at a time

    def _run(self, x):
        if self.batched:
            return self.backend(torch.from_numpy(x)).numpy()
        return np.concatenate([self.backend(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])

    def execute(self, requests):
        tiles = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
        responses = [None] * len(requests)
        by_shape = {}
        for i, t in enumerate(tiles):
            by_shape.setdefault(t.shape[1:], []).append(i)
        for members in by_shape.values():
            try:
                y = self._run(np.concatenate([tiles[i] for i in members]))
            except (ValueError, RuntimeError) as e:
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
                continue
            start = 0
            for i in members:
                n = len(tiles[i])
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor("output", y[start:start + n])])
                start += n
        return responses
