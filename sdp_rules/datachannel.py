"""WebRTC data channels (TS 23.334 5.20.2.2): placeholder until the handler lands."""

from __future__ import annotations

KIND = "datachannel"


def classify_access(m) -> bool:
    return False


def classify_core(m) -> bool:
    return False
