"""The root of srdeploy's errors.

Every error srdeploy raises on purpose derives from :class:`SrdeployError`, and its text is one
line that names the problem and the fix. The command lines catch ``SrdeployError`` and print that
line (exit status 2); anything else is a bug and keeps its traceback. Subclasses may also derive
from the built-in class their callers expect (``ValueError``, ``RuntimeError``, ``FileExistsError``).
"""
from __future__ import annotations

__all__ = ["SrdeployError", "UsageError", "OutputExistsError"]


class SrdeployError(Exception):
    """An error with a one-line message for the user (what is wrong and how to fix it)."""


class UsageError(SrdeployError, ValueError):
    """The command line asks for something that cannot be done (exit status 2)."""


class OutputExistsError(SrdeployError, FileExistsError):
    """The output exists and overwriting was not asked for."""
