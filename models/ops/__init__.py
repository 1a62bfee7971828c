"""The custom-op boundary (DESIGN.md §3): ``torch.ops.srdeploy.*`` and their PyTorch references.

See :mod:`models.ops.reference` (the ops and their references) and :mod:`models.ops.contract` (what
each op is, for every layer). This package imports nothing above ``models``: CUDA tensors run the
references until the layer that picks a CUDA device calls ``plugins.kernels.enable()``.
"""
from __future__ import annotations

from .reference import *  # noqa: F401,F403
from .reference import __all__  # noqa: F401
