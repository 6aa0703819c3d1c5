"""What ``embviz`` says: the report on stdout, progress and warnings on stderr.

Library modules never print; the command does, here only. A reader that has gone
(``embviz ... | head``) is not an error: the files are written all the same.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

__all__ = ["EXIT_USAGE", "PROG", "Progress", "fmt", "one_line", "out", "warn", "write"]

PROG = "embviz"
EXIT_USAGE = 2


def _silence(stream: Any) -> None:
    """Point a stream whose reader has gone (``| head``) at the null device.

    A closed pipe is not an error of the command: the files are written all the same. The
    descriptor itself is replaced, so that the interpreter's final flush of the buffered
    text does not fail either ("Exception ignored ... BrokenPipeError").
    """
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's buffer)
        pass


def write(stream: Any, text: str, flush: bool = False) -> None:
    """Write ``text`` to ``stream``; a reader that has closed the pipe is not an error."""
    try:
        stream.write(text)
        if flush:
            stream.flush()
    except BrokenPipeError:
        _silence(stream)


class Progress:
    """``embviz: <message>`` lines on stderr, unless quiet (``-q``, or not rank 0)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        """Show ``message`` (one line, without the line end) unless quiet."""
        if not self.quiet:
            write(sys.stderr, f"{PROG}: {message}\n", flush=True)


def out(text: str) -> None:
    """One line of the command's own report, on stdout."""
    write(sys.stdout, text + "\n")


def warn(message: str) -> None:
    """``embviz: warning: <message>`` on stderr, shown even with ``-q`` (it is about the result)."""
    write(sys.stderr, f"{PROG}: warning: {' '.join(message.split())}\n", flush=True)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def fmt(value: Any) -> str:
    """A table value: floats with 4 decimals (``nan``/``inf`` as they are), others as text."""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)
