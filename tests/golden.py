"""SDP golden files with placeholders, as rtpengine's tests write them.

An expected SDP is text, one line per SDP line; ``{name}`` stands for a value
chosen at run time (a port, a fingerprint, a tls-id).  A name used twice must
match the same value both times -- that is what the file asserts about it, for
instance that every bundled m-line has the one ``{bundle_port}``.
"""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = re.compile(r"\{(\w+)\}")
TOKEN = r"[^ ]+"


def match_sdp(got: str, expected: str, known: dict[str, str] | None = None) -> dict[str, str]:
    """Compare an SDP body with an expected text line by line; return the placeholders' values.

    ``known`` gives values some placeholders must have (and collects the others).
    """
    lines = got.split("\r\n")
    assert lines[-1] == "", "the SDP does not end in CRLF"
    lines = lines[:-1]
    want = [line for line in expected.strip("\n").split("\n")]
    values: dict[str, str] = dict(known or {})
    for n, (line, pattern) in enumerate(zip(lines, want)):
        regex = "".join(f"({TOKEN})" if i % 2 else re.escape(part)
                        for i, part in enumerate(PLACEHOLDER.split(pattern)))
        m = re.fullmatch(regex, line)
        assert m, f"line {n + 1}: {line!r} does not match {pattern!r}"
        for name, value in zip(PLACEHOLDER.findall(pattern), m.groups()):
            assert values.setdefault(name, value) == value, f"line {n + 1}: {{{name}}} is {values[name]} and {value}"
    extra = (lines if len(lines) > len(want) else want)[min(len(lines), len(want)):]
    assert len(lines) == len(want), f"{len(lines)} lines, {len(want)} expected:\n" + "\n".join(extra[:3])
    return values


def read(path: Path) -> str:
    return path.read_text(encoding="ascii")
