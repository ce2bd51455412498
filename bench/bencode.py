"""Bencode (BEP 3), the encoding of rtpengine's NG control protocol.

Written here rather than taken from PyPI because the benchmark needs only the
four types the NG protocol uses (byte strings, integers, lists, dictionaries),
the codec is thirty lines, and the PyPI packages that offer it are either
unmaintained or pull in BitTorrent tooling.  Strings are encoded as UTF-8;
decoded strings come back as ``str`` when they are valid UTF-8, else ``bytes``.
"""

from __future__ import annotations

from typing import Any


def encode(value: Any) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes after bencoded value at offset {end}")
    return value


def _decode(data: bytes, i: int) -> tuple[Any, int]:
    if i >= len(data):
        raise ValueError("truncated bencoded value")
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c == b"l":
        out, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            out.append(item)
        return out, i + 1
    if c == b"d":
        d, i = {}, i + 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            d[key], i = _decode(data, i)
        return d, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        start = colon + 1
        end = start + int(data[i:colon])
        if end > len(data):
            raise ValueError("truncated bencoded string")
        raw = data[start:end]
        try:
            return raw.decode(), end
        except UnicodeDecodeError:
            return raw, end
    raise ValueError(f"bad bencode token {c!r} at offset {i}")
