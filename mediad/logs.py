"""Log line formats of mediad and of the Kamailio plugin: text, or JSON lines for log shippers.

``[mediad] log_format`` and ``[plugin] log_format`` choose ``text`` (the default, one
human line) or ``json``: one JSON object per line with ``time`` (RFC 3339, UTC, with
milliseconds), ``level``, ``logger`` and ``message``, then the call's context when the
line carries it (a call event: ``call_id``, ``dialog``, ``stream``, ``leg``, ``component``,
``event``, ``reason``, given as ``extra`` to the logging call), and an exception's traceback under
``exc``.  What goes in a line is the caller's business: no key, ice-pwd or exported
keying material is ever passed to a logger (the tests grep every log for them).
"""

from __future__ import annotations

import json
import logging
import time

LOG_FORMATS = ("text", "json")
# Attributes of a LogRecord copied into a JSON line when a logging call set them (extra=).
CONTEXT = ("call_id", "dialog", "stream", "leg", "component", "event", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        doc = {
            "time": f"{stamp}.{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def formatter(log_format: str, text_format: str) -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` uses ``text_format``)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(text_format)


__all__ = ["CONTEXT", "JsonFormatter", "LOG_FORMATS", "formatter"]
