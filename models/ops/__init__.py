"""The custom-op boundary (DESIGN.md §3): ``torch.ops.srdeploy.*`` and their PyTorch references.

See :mod:`models.ops.reference`.
"""
from __future__ import annotations

from .reference import *  # noqa: F401,F403
from .reference import __all__  # noqa: F401

# CUDA tensors run the kernels of plugins/ once their library is built (python -m plugins.build);
# without it they use the references, and one logged warning says how to build it.
from plugins import kernels as _kernels  # noqa: E402

_kernels.enable()
