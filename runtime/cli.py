"""What every srdeploy command line shares: help that shows choices, defaults and examples."""
from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


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
