"""mediad.logs: the text and JSON line formats, and the options that choose them."""

from __future__ import annotations

import io
import json
import logging

from mediad.config import parse_config
from mediad.logs import JsonFormatter, formatter


def _line(fmt: logging.Formatter, *args, **kw) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(fmt)
    logger = logging.getLogger("e2ae.test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.info(*args, **kw)
    return out.getvalue()


def test_json_lines_carry_the_call_context_given_as_extra():
    line = _line(JsonFormatter(), "dialog %s stream %d %s: %s", "d1", 0, "rtp", "dtls_failed",
                 extra={"dialog": "d1", "stream": 0, "leg": "rtp", "event": "dtls_failed",
                        "reason": "fingerprint_mismatch"})
    assert line.endswith("\n") and line.count("\n") == 1
    doc = json.loads(line)
    assert doc["message"] == "dialog d1 stream 0 rtp: dtls_failed"
    assert doc["level"] == "INFO" and doc["logger"] == "e2ae.test.logs"
    assert (doc["dialog"], doc["stream"], doc["leg"], doc["reason"]) == ("d1", 0, "rtp", "fingerprint_mismatch")
    assert doc["time"].endswith("Z") and "T" in doc["time"]
    assert "call_id" not in doc


def test_json_lines_keep_a_traceback_and_newlines_on_one_line():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("e2ae.test.logs.exc")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("Call-ID %s: failed", "c1", extra={"call_id": "c1"})
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["call_id"] == "c1" and "ValueError: bad\nthing" in doc["exc"]


def test_text_is_the_default_and_json_is_an_option():
    assert isinstance(formatter("json", "%(message)s"), JsonFormatter)
    assert _line(formatter("text", "%(levelname)s %(message)s"), "hello") == "INFO hello\n"
    config = parse_config("[mediad]\nlog_format = json\n[plugin]\nlog_format = JSON\nlog_level = debug\n")
    assert config.mediad_log_format == "json" and config.plugin_log_format == "json"
    assert config.plugin_log_level == "DEBUG"
