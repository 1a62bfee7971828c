"""Rebuild a golden file's model (weights rule of shared/golden/README.md) and its inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import models
from models.common import RGB_MEAN


def golden_weights(meta: dict) -> dict[str, torch.Tensor]:
    rs = np.random.RandomState(meta["weight_seed"])
    rgb_range = meta["config"]["rgb_range"]
    state = {}
    for key, shape in meta["keys"]:
        shape = tuple(shape)
        if key.startswith(("sub_mean.", "add_mean.")):
            sign = -1 if key.startswith("sub_mean.") else 1
            value = (np.eye(3).reshape(3, 3, 1, 1) if key.endswith("weight")
                     else sign * rgb_range * np.array(RGB_MEAN))
        elif key.endswith("escape_NaN"):
            value = np.full(shape, 1e-4)
        elif key.endswith(".weight") and shape == (1,):
            value = rs.uniform(0.05, 0.45, size=shape)
        elif len(shape) == 1:
            value = rs.uniform(-0.05, 0.05, size=shape)
        else:
            value = rs.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def load_golden(path: Path):
    """(model with golden weights and rotations, input, expected output, meta)."""
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    model = models.build(meta["model"], meta["scale"], **meta["config"])
    model.load_state_dict(golden_weights(meta), strict=True)
    if meta["model"] == "nlsn":
        blocks = model.attention_blocks()
        assert len(blocks) == meta["n_rotations"]
        for i, block in enumerate(blocks):
            rot = torch.from_numpy(data[f"rot_{i:03d}"])
            block.rotations[:, :, : rot.shape[-1]] = rot
    return model, torch.from_numpy(data["input"]), torch.from_numpy(data["output"]), meta
