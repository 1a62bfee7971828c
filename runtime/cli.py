"""What every srdeploy command line shares: help that shows choices, defaults and examples."""
from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "whole_number"]


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
