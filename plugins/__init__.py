"""srdeploy plugins package: CUDA kernels of the custom ops and their loaders.

- ``plugins/{bucketSort,bucketAttention,crossScaleFold}/``: one folder per op (kernel + launcher
  header + README with the op's inputs, outputs and attributes as :mod:`models.ops.contract` gives
  them); ``plugins/include/srdeploy_kernels.h`` is the C ABI of ``libsrdeploy_kernels.so``;
  ``plugins/CMakeLists.txt`` builds it.
- ``python -m plugins.build``: CMake configure + build into ``plugins/build/``.
- ``plugins.kernels.enable()``: torch.ops.srdeploy.* on CUDA tensors use the kernels (loaded with
  ctypes on the first CUDA call; the PyTorch reference with one warning if the library is missing).
  The layer that picks a CUDA device calls it; ``models`` never imports ``plugins``.

Importing this package imports nothing CUDA-specific.
"""
