"""Log lines that input cannot forge: control characters in messages are escaped."""

from __future__ import annotations

import logging
import re

__all__ = ["SafeFormatter", "escape_control"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    r"""Escape control characters (newlines, carriage returns, ANSI escapes, ...).

    Examples
    --------
    >>> escape_control("Austin\nCRITICAL forged")
    'Austin\\nCRITICAL forged'
    >>> escape_control("\x1b[31mred")
    '\\x1b[31mred'
    """
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    return f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}"


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that escapes control characters in the message.

    A value read from input (a neighborhood name with a newline, say) can then never
    start a line of its own in a log file. Tracebacks keep their lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` with its message escaped (the record itself is not changed)."""
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = escape_control(record.getMessage()), None
        return super().format(safe)
