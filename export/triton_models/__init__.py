"""Model files that ``python -m export.triton`` copies into a Triton model repository.

They run inside Triton's Python backend (``triton_python_backend_utils`` exists only there), so
they are data to this package, never imported by it.
"""
