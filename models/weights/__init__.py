"""Bundled default weights: compact NLSN and CSNLN trained by ``python -m models.train`` on T91.

``manifest.json`` lists each checkpoint with its architecture config (all options, including
those a state dict cannot tell), training data, steps, seed, time, hardware, sha256 and the
PSNR it reaches; ``default`` names the model and scale used when nothing is asked for.

    from models import weights
    weights.find("nlsn", 2)      # Entry(model='nlsn', scale=2, path=..., config={...}, ...)
    weights.find(None, None)     # the default entry
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
MANIFEST = FOLDER / "manifest.json"


@dataclass(frozen=True)
class Entry:
    model: str
    scale: int
    path: Path
    config: dict[str, Any]
    sha256: str
    info: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def overrides(self) -> dict[str, Any]:
        """Options to pass to ``models.load`` that the state dict cannot tell (empty when none are needed)."""
        return dict(self.info.get("load_overrides", {}))

    def describe(self) -> str:
        cfg = " ".join(f"{k}={v}" for k, v in self.config.items() if k not in ("rgb_range", "n_colors", "lsh_seed"))
        q = self.info.get("quality", {}).get("Set5")
        gain = f"; Set5 {q['psnr']:.2f} dB vs bicubic {q['bicubic']:.2f}" if q else ""
        return (f"bundled {self.model.upper()} x{self.scale} ({self.path.name}: compact {cfg}, "
                f"trained on {self.info.get('training', {}).get('data', 'T91')}{gain})")


@lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        return {"default": None, "models": {}}
    return json.loads(MANIFEST.read_text())


def entries() -> list[Entry]:
    out = []
    for key, e in manifest().get("models", {}).items():
        out.append(Entry(model=e["model"], scale=int(e["scale"]), path=FOLDER / e["file"],
                         config=dict(e["config"]), sha256=e["sha256"], info=e))
    return out


def default_model_scale() -> tuple[str, int] | None:
    d = manifest().get("default")
    return (d["model"], int(d["scale"])) if d else None


def find(model: str | None, scale: int | None) -> Entry | None:
    """The bundled entry for (model, scale); a missing one takes the default's value. None if none."""
    default = default_model_scale()
    if default is None:
        return None
    if model is None and scale is None:
        model, scale = default
    elif model is None:
        model = default[0]
    elif scale is None:
        scale = default[1] if any(e.model == model.lower() and e.scale == default[1] for e in entries()) else None
        if scale is None:  # that model's only or smallest bundled scale
            found = sorted(e.scale for e in entries() if e.model == model.lower())
            scale = found[0] if found else None
    for e in entries():
        if e.model == str(model).lower() and e.scale == scale and e.path.is_file():
            return e
    return None
