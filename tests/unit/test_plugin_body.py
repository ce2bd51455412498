"""The SDP part of a multipart SIP body (plugin.body): found, replaced, the rest untouched."""

from __future__ import annotations

import pytest

from plugin.body import MAX_DEPTH, MultipartError, boundary, find_sdp, is_multipart

SDP = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'entity="pres:wic@example.com">\r\n\r\n  <tuple id="t1"><status/></tuple>\r\n</presence>')


def emergency_body(sdp: str = SDP, *, crlf: str = "\r\n", preamble: str = "", epilogue: str = "") -> str:
    """An RFC 6442 shaped body: the SDP, then a PIDF-LO, boundary "b0undary"."""
    return crlf.join([
        preamble + "--b0undary",
        "Content-Type: application/sdp",
        "",
        sdp.rstrip("\r\n").replace("\r\n", crlf),
        "--b0undary  ",  # transport padding after the delimiter (RFC 2046 5.1.1)
        "Content-Type: application/pidf+xml",
        "Content-ID: <wic@example.com>",
        "",
        PIDF.replace("\r\n", crlf),
        "--b0undary--",
    ]) + epilogue


def test_content_types():
    assert is_multipart('multipart/mixed;boundary="b0undary"')
    assert is_multipart("Multipart/Related ; type=application/sdp; boundary=x")
    assert not is_multipart("application/sdp")
    assert boundary('multipart/mixed; charset=x; boundary="b0 und\\"ary"') == 'b0 und"ary'
    assert boundary("multipart/mixed;BOUNDARY=simple;x=y") == "simple"
    with pytest.raises(MultipartError) as caught:
        boundary("multipart/mixed")
    assert str(caught.value) == "multipart Content-Type without a boundary parameter"
    with pytest.raises(MultipartError, match="boundary of 71 characters"):
        boundary("multipart/mixed; boundary=" + "x" * 71)
    assert boundary("multipart/mixed; boundary=" + "x" * 70) == "x" * 70  # RFC 2046: 1 to 70
    with pytest.raises(MultipartError, match="boundary of 4 characters"):
        boundary('multipart/mixed; boundary="abc "')  # may not end in a space (RFC 2046 5.1.1)


@pytest.mark.parametrize("crlf", ["\r\n", "\n"])
@pytest.mark.parametrize("preamble,epilogue", [("", ""), ("This is a preamble.\r\n", "\r\nepilogue\r\n")])
def test_the_sdp_part_is_replaced_and_every_other_byte_kept(crlf, preamble, epilogue):
    body = emergency_body(crlf=crlf, preamble=preamble, epilogue=epilogue)
    part = find_sdp("multipart/mixed; boundary=b0undary", body)
    assert part is not None
    assert part.sdp == SDP.rstrip("\r\n").replace("\r\n", crlf)
    assert part.rebuild(part.sdp) == body
    new = "v=0\r\nm=audio 9 RTP/AVP 0\r\n"
    rebuilt = part.rebuild(new)
    assert rebuilt == body.replace(part.sdp, new)
    again = find_sdp("multipart/mixed; boundary=b0undary", rebuilt)
    assert again is not None and again.sdp == new and again.after == part.after


def test_part_headers_folded_compact_or_in_any_case_are_read():
    body = ("--x\r\nContent-ID: <a>\r\nc: Application/SDP;\r\n charset=utf-8\r\n\r\n" + SDP
            + "\r\n--x\r\n\r\nplain text part without headers\r\n--x--\r\n")
    part = find_sdp("multipart/mixed; boundary=x", body)
    assert part is not None and part.sdp == SDP


def test_a_body_without_an_sdp_part_has_none():
    body = "--x\r\nContent-Type: application/pidf+xml\r\n\r\n" + PIDF + "\r\n--x--"
    assert find_sdp("multipart/mixed; boundary=x", body) is None


def test_boundary_text_inside_a_part_is_not_a_delimiter():
    # "--x" only delimits at the start of a line; "--xyz" is another boundary's line.
    body = ("--x\r\nContent-Type: text/plain\r\n\r\nsee --x here\r\n--xyz\r\n--x\r\n"
            "Content-Type: application/sdp\r\n\r\n" + SDP + "--x--")
    part = find_sdp("multipart/mixed; boundary=x", body)
    assert part is not None and part.sdp == SDP.rstrip("\r\n")


def test_delimiters_after_the_closing_one_are_epilogue():
    # RFC 2046 5.1.1: what follows the close-delimiter is the epilogue, to be ignored,
    # even when it looks like another SDP part (no 488 "two SDP parts").
    epilogue = "\r\n--x\r\nContent-Type: application/sdp\r\n\r\n" + SDP + "--x--\r\n"
    body = "--x\r\nContent-Type: application/sdp\r\n\r\n" + SDP + "--x--" + epilogue
    part = find_sdp("multipart/mixed; boundary=x", body)
    assert part is not None and part.sdp == SDP.rstrip("\r\n")
    assert part.after == "\r\n--x--" + epilogue


@pytest.mark.parametrize("body,status", [
    ("v=0\r\n", 400),  # no delimiter at all
    ("--x\r\nContent-Type: application/sdp\r\n\r\n" + SDP, 400),  # no closing delimiter
    ("--x\r\nContent-Type: application/sdp\r\n\r\n" + SDP + "--x\r\nContent-Type: application/sdp\r\n\r\n"
     + SDP + "--x--", 488),  # two SDP parts: which is the offer?
])
def test_bodies_that_cannot_be_taken_apart_are_refused_with_a_status(body, status):
    with pytest.raises(MultipartError) as caught:
        find_sdp("multipart/mixed; boundary=x", body)
    assert caught.value.status == status
    # the reason goes into the Warning header: it says what is wrong
    assert str(caught.value) == {
        "v": "the body has no line with the Content-Type's boundary",
        "-": "the multipart body has no closing boundary line" if status == 400 else
             "the multipart body has 2 SDP parts",
    }[body[0]]


def nested(levels: int, inner: str) -> tuple[str, str]:
    """``inner`` (a part's content and headers) wrapped in ``levels`` multipart/mixed
    bodies, each with a PIDF part before it; the outermost Content-Type and body."""
    ctype, body = "", inner
    for level in range(levels):
        mark = f"level-{level}"
        body = (f"--{mark}\r\nContent-Type: application/pidf+xml\r\n\r\n{PIDF}\r\n"
                f"--{mark}\r\n{body}\r\n--{mark}--\r\n")
        ctype = f'multipart/mixed; boundary="{mark}"'
        if level < levels - 1:
            body = f"Content-Type: {ctype}\r\n\r\n{body}"
    return ctype, body


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_an_sdp_in_a_nested_multipart_is_found_and_every_other_byte_kept(levels):
    ctype, body = nested(levels, "Content-Type: application/sdp\r\n\r\n" + SDP.rstrip("\r\n"))
    part = find_sdp(ctype, body)
    assert part is not None and part.sdp == SDP.rstrip("\r\n")
    assert part.rebuild(part.sdp) == body
    new = "v=0\r\nm=audio 9 RTP/AVP 0"
    rebuilt = part.rebuild(new)
    assert rebuilt == body.replace(part.sdp, new) and rebuilt.count(PIDF) == levels
    assert find_sdp(ctype, rebuilt).sdp == new


@pytest.mark.parametrize("inner,levels,status", [
    ("Content-Type: application/sdp\r\n\r\n" + SDP.rstrip("\r\n"), MAX_DEPTH + 1, 400),  # too deep
    ('Content-Type: multipart/alternative; boundary="in"\r\n\r\n--in\r\nContent-Type: application/sdp\r\n\r\n'
     + SDP + "--in--", 1, 400),  # the nested part breaks its own boundary: no closing line
    ('Content-Type: multipart/alternative; boundary="in"\r\n\r\n--in\r\nContent-Type: application/sdp\r\n\r\n'
     + SDP + "--in\r\nContent-Type: application/sdp\r\n\r\n" + SDP + "--in--", 1, 488),  # two SDP parts
])
def test_nested_bodies_that_cannot_be_taken_apart_are_refused_with_a_status(inner, levels, status):
    ctype, body = nested(levels, inner)
    if status == 400 and levels == 1:
        body = body.replace("--in--", "--in-")
    with pytest.raises(MultipartError) as caught:
        find_sdp(ctype, body)
    assert caught.value.status == status
    if levels > MAX_DEPTH:
        assert str(caught.value) == f"multipart nested deeper than {MAX_DEPTH} levels"


def test_two_sdp_parts_at_different_levels_are_two():
    ctype, body = nested(2, "Content-Type: application/sdp\r\n\r\n" + SDP.rstrip("\r\n"))
    body = body.replace("--level-1\r\nContent-Type: application/pidf+xml\r\n\r\n" + PIDF,
                        "--level-1\r\nContent-Type: application/sdp\r\n\r\n" + SDP.rstrip("\r\n"), 1)
    with pytest.raises(MultipartError) as caught:
        find_sdp(ctype, body)
    assert caught.value.status == 488


@pytest.mark.parametrize("crlf", ["\r\n", "\n"])
def test_a_part_without_headers_is_text_plain_whatever_its_content(crlf):
    # RFC 2046 5.1.1: a part starting with an empty line has no headers (text/plain),
    # even when its first lines look like headers.
    body = crlf.join(["--x", "", "Content-Type: application/sdp", "", SDP.rstrip("\r\n"), "--x--"])
    assert find_sdp("multipart/mixed; boundary=x", body) is None


def test_a_headers_only_sdp_part_is_an_empty_sdp_and_loses_no_byte():
    body = "--x\r\nContent-Type: application/sdp\r\n--x--\r\n"
    part = find_sdp("multipart/mixed; boundary=x", body)
    assert part is not None and part.sdp == ""
    assert part.before + part.sdp + part.after == body


def test_part_content_type_with_parameters_and_colons():
    body = ('--x\r\nContent-Type: application/sdp; charset=utf-8; note="a:b"\r\n\r\n' + SDP + "--x--")
    part = find_sdp("multipart/mixed; boundary=x", body)
    assert part is not None and part.sdp == SDP.rstrip("\r\n")
