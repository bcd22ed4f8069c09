"""The one terminal console of a run, and the logging handler that writes through it.

rich's live progress display redraws its bars on stderr; a plain logging StreamHandler writing to the
same terminal behind its back makes lines vanish and bars print twice. Every log line meant for a
person therefore goes through this console (rich prints it above the live bars), while Hydra's file
handler keeps the timestamped lines in the job's log file.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

_STYLE = {logging.WARNING: ("yellow", "warning: "), logging.ERROR: ("red", "error: ")}


class ConsoleLogHandler(logging.Handler):
    """Short lines on the run's console: the message, with `warning:`/`error:` in front where it applies.

    A record logged with `extra={"file_only": True}` goes to the log file only (the CLI prints its own
    line for it), so nothing reaches the terminal twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        try:
            message = escape(self.format(record))
            level = max((lvl for lvl in _STYLE if record.levelno >= lvl), default=None)
            if level is None:
                console.print(message, highlight=False, soft_wrap=True)
            else:
                style, prefix = _STYLE[level]
                console.print(f"[{style}]{prefix}[/]{message}", highlight=False, soft_wrap=True)
        except Exception:  # logging must never raise into the run
            self.handleError(record)


FILE_ONLY = {"file_only": True}
