"""The architectures srdeploy knows, and building one by name with its released configuration."""
from __future__ import annotations

from typing import Any

from . import ops  # noqa: F401  (registers torch.ops.srdeploy.*)
from .base import InputSizeError, SRModel
from .csnln import CSNLN
from .csnln import DEFAULTS as CSNLN_DEFAULTS
from .edsr import EDSR
from .edsr import DEFAULTS as EDSR_DEFAULTS
from .nlsn import NLSN
from .nlsn import DEFAULTS as NLSN_DEFAULTS

ARCHITECTURES: dict[str, tuple[type[SRModel], dict[str, Any]]] = {
    "nlsn": (NLSN, NLSN_DEFAULTS),
    "csnln": (CSNLN, CSNLN_DEFAULTS),
    "edsr": (EDSR, EDSR_DEFAULTS),
}
SCALES = (2, 3, 4)


def build(name: str, scale: int, **cfg: Any) -> SRModel:
    """A network with the released configuration, overridden by official option names in ``cfg``."""
    key = name.lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if scale not in SCALES:
        raise ValueError(f"scale {scale} is not supported; choose one of {', '.join(map(str, SCALES))}")
    cls, defaults = ARCHITECTURES[key]
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"{key} has no option {', '.join(unknown)}; its options are {', '.join(defaults)}")
    model = cls(scale, **{**defaults, **cfg})
    return model.eval()

