"""Whether a progress bar may draw: only on an interactive terminal.

A bar redraws itself with carriage returns. Written to a file or a pipe (a log, CI, `> out.txt`),
every redraw stays in the output, thousands of characters per line. tqdm draws wherever it is
pointed, and rich counts FORCE_COLOR as a terminal, so neither is left to guess: every bar of the
project is disabled unless the stream it writes to is a terminal. Redirected output gets no bar;
the callers' own summary lines still tell what was done.
"""

from __future__ import annotations

import sys
from typing import TextIO


def progress_on_terminal(stream: TextIO | None = None, wanted: bool = True) -> bool:
    """True when a bar is `wanted` and `stream` (default: stderr, where tqdm writes) is a terminal."""
    if not wanted:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
