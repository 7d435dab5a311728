"""The `billhook` command line: every command, one-line errors."""

from billhook.cli.main import main

__all__ = ["main"]
