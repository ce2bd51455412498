"""A lossless SDP model (RFC 8866).

Theory of operation
-------------------
An SDP body is a sequence of ``<type>=<value>`` lines.  Everything before the
first ``m=`` line is the session section; each ``m=`` line opens a media
section.  The model keeps every line, in order, as a :class:`Line`; it parses
only what the rules need (the ``m=`` line, ``c=`` lines and attributes) and
parses them on demand, so what the rules do not touch is serialised exactly as
it came in: ``str(parse(x)) == x`` for every well-formed SDP whose lines end in
CRLF.  Bare LF line endings are accepted and normalised to CRLF.

Malformed input raises :class:`SdpParseError`, which names the line number and
the offending token; the plugin turns it into ``488`` with a ``Warning``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from sdp_rules.errors import SdpParseError

CRLF = "\r\n"

# RFC 8866 section 9: session-level line types and media-level line types.
_SESSION_TYPES = frozenset("vosiuepcbtrzkam")
_MEDIA_TYPES = frozenset("micbka")
_LINE_TYPES = frozenset("abcdefghijklmnopqrstuvwxyz")  # <type> is one ASCII letter, a-z
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_DIGITS_RE = re.compile(r"^[0-9]+$")  # str.isdigit() would accept non-ASCII digits


@dataclass
class Line:
    """One ``<type>=<value>`` line, kept verbatim."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"

    @property
    def is_attribute(self) -> bool:
        return self.type == "a"

    @property
    def attribute_name(self) -> str:
        """The attribute's name (``a=name`` or ``a=name:value``)."""
        return self.value.split(":", 1)[0]

    @property
    def attribute_value(self) -> str | None:
        """The attribute's value, or ``None`` for a property attribute."""
        _, colon, value = self.value.partition(":")
        return value if colon else None


@dataclass
class Connection:
    """A parsed ``c=`` line (RFC 8866 section 5.7)."""

    net_type: str
    addr_type: str
    address: str

    @classmethod
    def parse(cls, value: str, lineno: int = 0) -> "Connection":
        parts = value.split(" ")
        if len(parts) != 3 or not all(parts):
            raise SdpParseError(lineno, value, "c= needs '<nettype> <addrtype> <address>'")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


class Section:
    """The lines of one section (session or media), in order."""

    def __init__(self, lines: list[Line] | None = None) -> None:
        self.lines: list[Line] = lines if lines is not None else []

    # -- attributes -----------------------------------------------------
    # The rules scan attributes by name many times per SDP body, so these loops
    # test ``line.type`` and ``line.value`` directly rather than through the
    # ``Line`` properties (same meaning, no call per line).
    def attribute_lines(self, name: str | None = None) -> list[Line]:
        if name is None:
            return [line for line in self.lines if line.type == "a"]
        if ":" in name:
            return []  # an attribute name ends at the first ":"
        prefix = name + ":"
        return [
            line
            for line in self.lines
            if line.type == "a" and (line.value == name or line.value.startswith(prefix))
        ]

    def attributes(self, name: str) -> list[str | None]:
        """Values of every ``a=name`` line (``None`` for a flag)."""
        return [line.attribute_value for line in self.attribute_lines(name)]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name`` line, or ``None``."""
        line = self._first_attribute(name)
        return line.attribute_value if line is not None else None

    def has_attribute(self, name: str) -> bool:
        return self._first_attribute(name) is not None

    def _first_attribute(self, name: str) -> Line | None:
        if ":" not in name:
            prefix = name + ":"
            for line in self.lines:
                if line.type == "a" and (line.value == name or line.value.startswith(prefix)):
                    return line
        return None

    def remove_attributes(self, *names: str) -> int:
        """Remove every ``a=`` line whose name is one of ``names``; return how many."""
        before = len(self.lines)
        wanted = set(names)
        self.lines = [
            line for line in self.lines
            if not (line.type == "a" and line.value.partition(":")[0] in wanted)
        ]
        return before - len(self.lines)

    def add_attribute(self, name: str, value: str | None = None) -> Line:
        """Append ``a=name[:value]`` after the section's last line."""
        line = Line("a", name if value is None else f"{name}:{value}")
        self.lines.append(line)
        return line

    def set_attribute(self, name: str, value: str | None = None) -> Line:
        """Replace the first ``a=name`` in place (dropping others), or append it."""
        existing = self.attribute_lines(name)
        text = name if value is None else f"{name}:{value}"
        if not existing:
            return self.add_attribute(name, value)
        existing[0].value = text
        for extra in existing[1:]:
            self.lines.remove(extra)
        return existing[0]

    # -- other typed lines ----------------------------------------------
    def lines_of(self, line_type: str) -> list[Line]:
        return [line for line in self.lines if line.type == line_type]

    def remove_lines(self, line_type: str) -> int:
        before = len(self.lines)
        self.lines = [line for line in self.lines if line.type != line_type]
        return before - len(self.lines)

    @property
    def connection(self) -> Connection | None:
        for line in self.lines:
            if line.type == "c":
                return Connection.parse(line.value)
        return None

    def set_connection(self, address: str, addr_type: str = "IP4") -> None:
        """Set (or insert, in RFC 8866 order) the ``c=`` line of this section."""
        value = f"IN {addr_type} {address}"
        lines = self.lines_of("c")
        if lines:
            lines[0].value = value
            for extra in lines[1:]:
                self.lines.remove(extra)
            return
        self._insert_ordered(Line("c", value))

    def bandwidths(self) -> list[tuple[str, int]]:
        """``(bwtype, value)`` of every ``b=`` line."""
        out = []
        for line in self.lines_of("b"):
            bwtype, _, value = line.value.partition(":")
            out.append((bwtype, int(value)))
        return out

    def _insert_ordered(self, new: Line) -> None:
        order = self._order()
        rank = order.index(new.type)
        for index, line in enumerate(self.lines):
            if line.type in order and order.index(line.type) > rank:
                self.lines.insert(index, new)
                return
        self.lines.append(new)

    def _order(self) -> str:
        return "vosiuepcbtrzkam"

    def __iter__(self) -> Iterator[Line]:
        return iter(self.lines)


@dataclass
class MediaLine:
    """A parsed ``m=`` line (RFC 8866 section 5.14)."""

    media: str
    port: int
    port_count: int | None
    proto: str
    fmts: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: str, lineno: int = 0) -> "MediaLine":
        parts = value.split(" ")
        if len(parts) < 4 or not all(parts[:3]):
            raise SdpParseError(lineno, value, "m= needs '<media> <port> <proto> <fmt> ...'")
        media, port_text, proto, *fmts = parts
        if not _TOKEN_RE.match(media):
            raise SdpParseError(lineno, media, "media type is not a token")
        port_part, _, count_part = port_text.partition("/")
        if not _DIGITS_RE.match(port_part) or int(port_part) > 65535:
            raise SdpParseError(lineno, port_text, "port is not a number in 0..65535")
        if count_part and not _DIGITS_RE.match(count_part):
            raise SdpParseError(lineno, port_text, "port count is not a number")
        if not all(fmts):
            raise SdpParseError(lineno, value, "empty format token")
        return cls(media, int(port_part), int(count_part) if count_part else None, proto, fmts)

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.fmts])


class MediaSection(Section):
    """One media description: its ``m=`` line and the lines below it."""

    def __init__(self, lines: list[Line], lineno: int = 0) -> None:
        super().__init__(lines)
        self._m = MediaLine.parse(lines[0].value, lineno)

    def _order(self) -> str:
        return "micbka"

    @property
    def m(self) -> MediaLine:
        return self._m

    def _sync(self) -> None:
        self.lines[0].value = str(self._m)

    @property
    def media(self) -> str:
        return self._m.media

    @property
    def port(self) -> int:
        return self._m.port

    @port.setter
    def port(self, value: int) -> None:
        self._m.port = value
        self._sync()

    @property
    def proto(self) -> str:
        return self._m.proto

    @proto.setter
    def proto(self, value: str) -> None:
        self._m.proto = value
        self._sync()

    @property
    def fmts(self) -> list[str]:
        return list(self._m.fmts)

    @fmts.setter
    def fmts(self, value: Iterable[str]) -> None:
        self._m.fmts = list(value)
        self._sync()

    @property
    def rejected(self) -> bool:
        """A port of zero rejects (or disables) the stream (RFC 3264 section 6)."""
        return self._m.port == 0

    def _insert_ordered(self, new: Line) -> None:
        # Never insert before the m= line itself.
        order = self._order()
        rank = order.index(new.type)
        for index, line in enumerate(self.lines[1:], start=1):
            if line.type in order and order.index(line.type) > rank:
                self.lines.insert(index, new)
                return
        self.lines.append(new)


class SessionDescription:
    """A whole SDP body: the session section and the media sections."""

    def __init__(self, session: Section, media: list[MediaSection]) -> None:
        self.session = session
        self.media = media

    def __str__(self) -> str:
        # Each line as Line.__str__ writes it, followed by CRLF.
        out = [f"{line.type}={line.value}{CRLF}" for line in self.session.lines]
        for section in self.media:
            out.extend([f"{line.type}={line.value}{CRLF}" for line in section.lines])
        return "".join(out) or CRLF  # a description without lines is a lone CRLF

    def connection_for(self, section: MediaSection) -> Connection | None:
        """The effective ``c=`` of a media section (its own, else the session's)."""
        return section.connection or self.session.connection

    def attribute_for(self, section: MediaSection, name: str) -> str | None:
        """A media-level attribute, falling back to the session level."""
        value = section.attribute(name)
        if value is None and not section.has_attribute(name):
            return self.session.attribute(name)
        return value

    def copy(self) -> "SessionDescription":
        return parse(str(self))


def _split_lines(text: str) -> list[str]:
    if "\r\n" in text:
        body = text.replace("\r\n", "\n")
    else:
        body = text
    if "\r" in body:
        raise SdpParseError(body[: body.index("\r")].count("\n") + 1, "\\r", "bare CR in SDP")
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse(text: object) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpParseError` naming the line and token."""
    if not isinstance(text, str):
        raise SdpParseError(0, repr(type(text)), "SDP body must be text")
    raw_lines = _split_lines(text)
    if not raw_lines:
        raise SdpParseError(1, "", "empty SDP body")
    session_lines: list[Line] = []
    media: list[MediaSection] = []
    current: list[Line] = session_lines  # the lines of the section being read
    allowed = _SESSION_TYPES
    for lineno, raw in enumerate(raw_lines, start=1):
        if len(raw) < 2 or raw[1] != "=" or raw[0] not in _LINE_TYPES:
            token = raw[:20] if raw else "(empty line)"
            raise SdpParseError(lineno, token, "not a '<type>=<value>' line")
        line_type = raw[0]
        line = Line(line_type, raw[2:])
        if lineno == 1 and (line_type != "v" or line.value != "0"):
            raise SdpParseError(lineno, raw, "SDP must start with v=0")
        if line_type == "m":
            # The section's line list is filled in place as its lines are read; the
            # m= line is parsed (and checked) here, once.
            current = [line]
            media.append(MediaSection(current, lineno))
            allowed = _MEDIA_TYPES
            continue
        if line_type not in allowed:
            where = "session" if allowed is _SESSION_TYPES else "media"
            raise SdpParseError(lineno, raw[:20], f"'{line_type}=' is not allowed at {where} level")
        if line_type == "a":
            if not line.value:
                raise SdpParseError(lineno, raw, "empty attribute")
        elif line_type == "c":
            Connection.parse(line.value, lineno)
        elif line_type == "b":
            bwtype, colon, value = line.value.partition(":")
            if not colon or not bwtype or not _DIGITS_RE.match(value):
                raise SdpParseError(lineno, line.value, "b= needs '<bwtype>:<bandwidth>'")
        current.append(line)
    session_types = {line.type for line in session_lines}
    for required in ("o", "s"):
        if required not in session_types:
            raise SdpParseError(1, f"{required}=", f"session section lacks '{required}='")
    return SessionDescription(Section(session_lines), media)
