"""What every srdeploy command line shares: help that shows choices, defaults and examples.

It sits with the other shared utilities at the bottom of the layers (models.errors, models.files),
so that the command lines of every layer (export, runtime, benchmarks) use it without importing upward.
"""
from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["HelpFormatter", "make_parser", "whole_number"]


def whole_number(low: int, high: int | None = None):
    """argparse type: an int from ``low`` to ``high`` (no upper bound when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"≥ {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's line breaks (examples, exit codes) and appends
    "(default: X)" to every option that has a default and does not name it already; flags
    (store_true/store_false) and options without a default say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, "", []) or default is argparse.SUPPRESS
                or not action.option_strings or action.nargs == 0):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def make_parser(prog: str, description: str, examples: Sequence[str], after: str = "") -> argparse.ArgumentParser:
    """A parser in srdeploy's help layout: the description, then ``examples:``, one command a line
    (shown as ``prog LINE``; a line after one ending in a backslash continues it and is shown as it
    is), then ``after`` (e.g. what to run next, or the exit codes)."""
    lines = [line if previous.endswith("\\") else f"  {prog} {line}"
             for previous, line in zip(["", *examples], examples)]
    epilog = "\n".join(["examples:", *lines]) + (f"\n{after}" if after else "")
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter)
