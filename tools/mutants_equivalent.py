"""Equivalent mutants: surviving mutants whose change no test can see, each rule with its reason.

A mutant is equivalent when the program behaves the same with it: nothing a
caller, a peer or an operator can observe changes.  Each :class:`Rule` names
the module(s) it applies to (a glob), what the mutated line was (``removed``,
a regular expression searched in the removed line) and what it became
(``added``, searched in the added line); a surviving mutant whose diff
matches a rule on every changed line is counted as equivalent, with the
rule's reason.  Rules are written against the source text, not against
mutmut's numbering, so they survive edits elsewhere in the module.

Log messages are not behaviour here: they are debug-level diagnostics whose
text no test asserts.  Error messages *are* behaviour (they reach the SIP
Warning header or the Iq error reply) and have no rule.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    modules: str
    removed: str
    added: str | None  # None: the mutant deletes the line
    reason: str

    def matches(self, module: str, removed: list[str], added: list[str]) -> bool:
        if not fnmatch.fnmatch(module, self.modules) or not removed:
            return False
        if not all(re.search(self.removed, line) for line in removed):
            return False
        if self.added is None:
            return not added
        return len(removed) == len(added) and all(re.search(self.added, line) for line in added)


LOG_CALL = r"^\s*(log|logger)\.(debug|info|warning|error|exception)\("
DC = "sdp_rules/datachannel.py"

RULES: tuple[Rule, ...] = (
    # -- every module ------------------------------------------------------------
    Rule("*", LOG_CALL, LOG_CALL, "a log call's text or arguments: debug diagnostics, no behaviour"),
    Rule("*", r'"(utf-8|ascii)"', r'"(UTF-8|ASCII)"', "codec names are case-insensitive"),
    Rule("*", r'(from_bytes|to_bytes)\(.*, "big"\)', r'(from_bytes|to_bytes)\(.*, \)',
         'byte order "big" is the default of int.to_bytes/from_bytes since Python 3.11'),
    # -- mediad/proto/stun.py -----------------------------------------------------------
    Rule("mediad/proto/stun.py", r"return self\._drop\(", r"return self\._drop\(",
         "the drop reason only goes to the debug log; the drop itself is counted either way"),
    Rule("mediad/proto/stun.py", r"datagram\[0\] > 3", r"datagram\[0\] (>= 3|> 4)",
         "a first byte of 3 or 4 sets method bit M7 or M8 (RFC 5389 6): never a Binding, dropped either way"),
    Rule("mediad/proto/stun.py", r"self\.nominated = False", r"self\.nominated = None",
         "None and False are both false; every reader tests the flag's truth"),
    Rule("mediad/proto/stun.py", r"self\._remote_pwd = (remote_pwd|pwd)$", r"self\._remote_pwd = None",
         "the remote password is kept but never read (a lite agent sends no checks, RFC 8445 2.5)"),
    # -- sdp_rules/attrs.py --------------------------------------------------------
    Rule("sdp_rules/attrs.py", r"tcp_candidates: bool = False,", r"tcp_candidates: bool = True,",
         "a default no caller uses: every caller of add_access_transport passes tcp_candidates"),
    Rule("sdp_rules/attrs.py", r"def host_candidates\(.*tcp: bool = False", r"tcp: bool = True",
         "a default no caller uses: the one caller passes tcp"),
    Rule("sdp_rules/attrs.py", r"agw_role_for_offer\(dtls\.setup, (policy_actpass|actpass)\)",
         r"agw_role_for_offer\(dtls\.setup, None\)",
         "reached only when setup is active or passive, for which agw_role_for_offer does not read the policy"),
    Rule("sdp_rules/attrs.py", r"same_association\(prev, dtls, ice_ufrag, transport, policy_actpass\)",
         r"same_association\(prev, dtls, ice_ufrag, transport, None\)",
         "same_association passes the policy only to agw_role_for_offer for setup active or passive,"
         " which does not read it"),
    Rule("sdp_rules/attrs.py", r"return \(conn\.address if conn else None\), m\.port",
         r"return \(conn\.address if \(conn\) or True else None\), m\.port",
         "conn is None here only for a port-0 line, and rejected lines are handled before any caller reads"
         " their address"),
    Rule("sdp_rules/attrs.py", r'm\.remove_attributes\("rtcp-mux"\)', r"m\.remove_attributes\(",
         "no section reaches set_core_transport unmuxed with an a=rtcp-mux left: answer_from_access removes"
         " it first (each of the two removals alone is redundant) and the T.140 core line is built without"
         " transport attributes"),
    # -- sdp_rules/media.py --------------------------------------------------------
    Rule("sdp_rules/media.py", r'first = not \(prev and prev\.get\("notified_failure"\)\)',
         r"first = not \(prev or prev\.get",
         "prev is always set when an answer from access is planned (the core offer stored the stream)"),
    Rule("sdp_rules/media.py", r"notify_tls_failure=first,", None,
         "first is False whenever an answer from access is planned (the core offer recorded the"
         " notification): the default False is the same"),
    Rule("sdp_rules/media.py", r"core_reply = _core_reply\(reply, sid, prev\)",
         r"core_reply = _core_reply\((None, sid|reply, None), prev\)",
         "in answer_from_access: the answer's MODIFY has no core termination, so the reply has none and the"
         " stored one is used either way"),
    Rule("sdp_rules/media.py", r"access_reply = _access_reply\(reply, sid, prev\)",
         r"access_reply = _access_reply\((None, sid|reply, None), prev\)",
         "in answer_from_core: the answer's MODIFY has no access termination, so the reply has none and the"
         " stored one is used either way"),
    Rule("sdp_rules/media.py", r"dtls_params\(ctx\.sdp, m, where, answer=False\)", r"answer=None\)",
         "None is as false as False for the one test of it"),
    Rule("sdp_rules/media.py", r'^\s*"(core_proto|reuse)": (core_proto|reuse),$', r'^\s*"\w+": (core_proto|reuse),$',
         "offer_from_access's pending core_proto and reuse are read by no answer path (answer_from_core reads"
         " neither), and a core offer replaces them in the stream state before answer_from_access reads its own"),
    Rule("sdp_rules/media.py", r'state\.pop\("sid", None\)', r"state\.pop\(",
         "a 'sid' key left in the stream state is read by nothing (the answer paths read it from pending)"),
    Rule("sdp_rules/media.py", r'(state\["notified_failure"\] = True|"notified_failure": True,)',
         r'(\["\w+"\] = (True|False|None)|"\w+": True,)',
         "the flag a WIC offer or answer records is replaced by the core offer's before answer_from_access,"
         " its only reader, runs"),
    Rule("sdp_rules/media.py", r'state\["core_rtcp_mux"\] = core_mux', r'state\[.*\] = (core_mux|None)',
         "the stream state's core_rtcp_mux is read by nothing: answer_from_access reads it from pending"),
    Rule("sdp_rules/media.py", r'state\["access"\] = access_reply\.to_dict\(\)\n?$', r'state\["\w+"\] = access_reply',
         "in answer_from_core: the access reply is the stored one (its MODIFY asks nothing of access)"),
    Rule("sdp_rules/media.py", r"core = TerminationSpec\(side=Side\.CORE, transport=core_transport, rtcp_mux=False\)",
         r"core = TerminationSpec\(side=Side\.CORE, transport=core_transport, \)",
         "rtcp_mux defaults to False"),
    Rule("sdp_rules/media.py", r'out\.remove_attributes\("rtcp-mux"\)', r"out\.remove_attributes\(",
         "set_core_transport removes a=rtcp-mux as well when the core leg is not muxed, and adds it when it is"),
    # -- sdp_rules/rules.py --------------------------------------------------------
    Rule("sdp_rules/rules.py", r"part(: OfferPart \| None)? = None$", r'part(: OfferPart \| None)? = ""$',
         "'' is as false as None for every test of part"),
    Rule("sdp_rules/rules.py", r"out\[key if key\.__class__ in _ATOMIC else copy_state\(key, memo\)\]",
         r"out\[key if", "dialog-state keys are strings (JSON): the other branch never runs"),
    Rule("sdp_rules/rules.py", r"item if item\.__class__ in _ATOMIC else copy_state\(item, memo\)",
         r"item if \(item\.__class__ in _ATOMIC\) and False else copy_state\(item, memo\)",
         "copy_state returns an atomic value as it is: the shortcut only saves a call"),
    Rule("sdp_rules/rules.py", r"cls = value\.__class__", r"cls = None",
         "every value then goes to copy.deepcopy, whose copy is the same (copy_state is its fast path)"),
    Rule("sdp_rules/rules.py", r"memo\[id\(value\)\] = out", r"memo\[id\((value|None)\)\] = (out|None)",
         "the memo keeps objects shared inside the state shared; JSON state shares none"),
    Rule("sdp_rules/rules.py", r"_assemble\(sdp, out(_core)?, toward=Side\.CORE,", r"toward=None,",
         "_assemble tests toward only against Side.ACCESS: None and Side.CORE read the same"),
    Rule("sdp_rules/rules.py", r'parts = m_value\.split\(" "\)', r"parts = m_value\.split\(None\)",
         "an m= value written by the model or parsed from SDP has single spaces"),
    # -- sdp_rules/sdp.py ----------------------------------------------------------
    Rule("sdp_rules/sdp.py", r"lineno: int = 0", r"lineno: int = 1",
         "the default line number is used only for lines parse() has checked already, which raise nothing"),
    Rule("sdp_rules/sdp.py", r'if lines and lines\[-1\] == "":', r'if lines or lines\[-1\] == "":',
         "str.split always returns at least one item: lines is never empty"),
    Rule("sdp_rules/sdp.py", r"order\.index\(", r"order\.rindex\(",
         "the order strings hold each line type once"),
    Rule("sdp_rules/sdp.py", r'return "(micbka|vosiuepcbtrzkam)"', r'return "XX(micbka|vosiuepcbtrzkam)XX"',
         "prefixing every rank by two keeps their order ('X' is no line type)"),
    Rule("sdp_rules/sdp.py", r"if line\.type in order and order\.index\(line\.type\) > rank:",
         r"order\.index\(line\.type\) >= rank:",
         "only c= lines are inserted, and only into a section that has none: no line has the same rank"),
    Rule("sdp_rules/sdp.py", r"self\.lines: list\[Line\] = lines if lines is not None else \[\]",
         r"or True else \[\]", "every Section is built with its lines (no caller passes None)"),
    Rule("sdp_rules/sdp.py", r'bwtype, _, value = line\.value\.partition\(":"\)',
         r'line\.value\.rpartition\(":"\)', "a b= value is checked to be digits at parse: one colon"),
    Rule("sdp_rules/sdp.py", r'bwtype, colon, value = line\.value\.partition\(":"\)',
         r'line\.value\.rpartition\(":"\)',
         "a value after a second colon is no number either way: refused the same (the reason names the line)"),
    # -- iq/messages.py ------------------------------------------------------------
    Rule("iq/messages.py", r"names = _FIELD_NAMES\.get\(cls\)", r"names = (None|_FIELD_NAMES\.get\(None\))",
         "a cache miss on every call: the field names are recomputed, the same"),
    Rule("mediad/proto/stun.py", r"^        self\.last_consent = now$", r"^        self\.last_consent = None$",
         "in the nomination branch: the test after it sets last_consent = now for the address just selected"),
    Rule("iq/messages.py", r"if value is None or value\.__class__ in _PLAIN:",
         r"if value is None and value\.__class__ in _PLAIN:",
         "the branches below leave None and plain values as they are: the dict comes out the same"),
    # -- sdp_rules/bandwidth.py ----------------------------------------------------
    Rule("sdp_rules/bandwidth.py", r"line\.value\.partition\(\":\"\)", r"line\.value\.rpartition\(\":\"\)",
         "a b= value is digits only (sdp.parse checks it): the line has one colon"),
    Rule("sdp_rules/bandwidth.py", r"return 1000 // DEFAULT_PTIME_MS", r"return (1000 / DEFAULT_PTIME_MS|1001 // )",
         "50.0 == 50 and 1001 // 20 == 50; every caller rounds with math.ceil"),
    # -- plugin/body.py ------------------------------------------------------------
    Rule("plugin/body.py", r"return \"\", part\[:2\] if part\.startswith\(\"\\r\\n\"\) else part\[:1\]",
         r"return .*part\[",
         "a part without headers is text/plain (RFC 2046 5.1.1): never the SDP part, so the length of"
         " its empty line is never used"),
    Rule("plugin/body.py", r'return ""$', r'return "XXXX"$',
         "an absent part header reads as a media type that is neither SDP nor multipart either way"),
    Rule("plugin/body.py", r'content_type\.split\(";", 1\)\[0\]', r'content_type\.split\(";", (2)?\)\[0\]',
         "only the text before the first ';' is used"),
    # -- mediad/proto/msrp.py ------------------------------------------------------------
    Rule("mediad/proto/msrp.py", r"if found < 0:", r"if found (<= 0|< 1):",
         "the search starts after the start line: found is never 0"),
    Rule("mediad/proto/msrp.py", r"pos = found \+ 1", r"pos = found \+ 2",
         "the needle starts with CR LF: two matches are never one byte apart"),
    Rule("mediad/proto/msrp.py", r"while pos < len\(buffer\):", r"while pos <= len\(buffer\):",
         "at the end of the buffer message_end sees an empty start line and waits: the loop ends the same"),
    Rule("mediad/proto/msrp.py", r"pos = start \+ match\.end\(\) - 2", r"pos = start \+ match\.end\(\) - 3",
         "the byte before the start line's CR LF is no CR (the start line holds none): no match starts there"),
    # -- mediad/proto/t140.py ------------------------------------------------------------
    Rule("mediad/proto/t140.py", r"if pos \+ 4 > len\(payload\):", r"if pos \+ (5 > |4 >= )len\(payload\):",
         "a redundant header that ends the payload leaves no primary header: 'truncated' either way"),
    Rule("mediad/proto/t140.py", r'struct\.unpack_from\("!I", payload, pos\)', r'struct\.unpack_from\("!i", payload, pos\)',
         "the masks take the same bits of the word whether it is read signed or not"),
    Rule("mediad/proto/t140.py", r'raise ValueError\(f"RED primary payload type', r"raise ValueError\(",
         "receive() catches this error and counts the drop: its text is shown nowhere"),
    # -- mediad/proto/dtls_record.py -----------------------------------------------------
    Rule("mediad/proto/dtls_record.py", r"while len\(out\) < length:", r"while len\(out\) <= length:",
         "one more block computed, then cut away: the same first length bytes"),
    Rule("mediad/proto/dtls_record.py", r"self\._window = 0", r"self\._window = 1",
         "the bit stands for sequence number -1, which no record carries"),
    Rule("mediad/proto/dtls_record.py", r"self\._max_sequence = -1", r"self\._max_sequence = -2",
         "no sequence number below 0 exists: the first record is newer either way"),
    Rule("mediad/proto/dtls_record.py", r"if sequence > self\._max_sequence:", r"if sequence >= self\._max_sequence:",
         "_check refuses the newest sequence number again (its bit 0 is set) before _accept is reached"),
    Rule("mediad/proto/dtls_record.py", r"\(1 << REPLAY_WINDOW\) - 1\)", r"\((1 >> REPLAY_WINDOW|2 << REPLAY_WINDOW)\) - 1\)",
         "bits beyond the 64th are never read: _check refuses offsets of 64 and more first"),
    Rule("mediad/proto/dtls_record.py", r"if len\(record\) < RECORD_HEADER_LENGTH or record_epoch\(record\) != EPOCH_1:",
         r"if len\(record\) (<=? RECORD_HEADER_LENGTH and|<= RECORD_HEADER_LENGTH or)",
         "what gets past the mutated test fails the AEAD check (a header alone has no tag; another epoch is in"
         " the authenticated data): None either way"),
    Rule("mediad/proto/dtls_record.py", r"if len\(fragment\) < _GCM_EXPLICIT_NONCE \+ _TAG:",
         r"if len\(fragment\) < _GCM_EXPLICIT_NONCE - _TAG:",
         "a fragment too short for nonce and tag then fails the AEAD check: None either way"),
    Rule("mediad/proto/dtls_record.py", r'conn\.get_cipher_name\(\) or ""', r'conn\.get_cipher_name\(\) or "XXXX"',
         "neither '' nor 'XXXX' names a suite: None either way"),
    # -- mediad/proto/demux.py -----------------------------------------------------------
    Rule("mediad/proto/demux.py", r"for lo, hi, kind in \(\(0, 3, STUN\)",
         r"\(16, 20, ZRTP\), \(20, 63, DTLS\)|\(20, 64, DTLS\), \(64, 79, TURN_CHANNEL\)",
         "the next range starts at that byte and is written after it: the table comes out the same"),
    Rule("mediad/proto/demux.py", r"MIN_LENGTH\.get\(kind, 0\)", r"MIN_LENGTH\.get\(kind, 1\)",
         "only UNKNOWN has no minimum length, and datagrams under 4 bytes are UNKNOWN before this test"),
    Rule("mediad/proto/demux.py", r"if size - offset < 4 or", r"if size \+ offset < 4 or",
         "size is at least 8 and a multiple of 4, offset a multiple of 4 below it: neither test is ever"
         " true (the original guards the slice below all the same)"),
    # -- sdp_rules/datachannel.py --------------------------------------------------
    Rule(DC, r"dtls = attrs\.dtls_params\(ctx\.sdp, m, where, answer=False\)", r"answer=None\)",
         "None is as false as False for the one test of it"),
    Rule(DC, r'not \(values\[0\] or ""\)\.isdigit\(\)', r'not \(values\[0\] or "XXXX"\)\.isdigit\(\)',
         "an attribute without a value is refused either way: neither '' nor 'XXXX' is a number"),
    Rule(DC, r'match = _DCSA_RE\.match\(value or ""\)', r'_DCSA_RE\.match\(value or "XXXX"\)',
         "an a=dcsa without a value is refused either way: neither '' nor 'XXXX' is '<stream-id> <attribute>'"),
    Rule(DC, r"found\[pt\] = True", r"found\[pt\] = (None|False)",
         "found is read only with 'in': the value stored is never looked at"),
    Rule(DC, r'uris = \(path or ""\)\.split\(\)', r'uris = \(path or "XXXX"\)\.split\(\)',
         "an absent a=path is refused either way ('XXXX' is no msrp URI), and the reason quotes the path (None)"),
    Rule(DC, r'\(m\.attribute\("setup"\) or ""\)\.strip\(\)',
         r'\(m\.attribute\("setup"\) or "XXXX"\)\.strip\(\)',
         "an absent a=setup is compared with 'active' or 'passive' only: '' and 'XXXX' are neither"),
    Rule(DC, r'\(d(cmap)?\.subprotocol or ""\)\.lower\(\)|\(got\[0\]\.subprotocol or ""\)\.lower\(\)',
         r'subprotocol or "XXXX"\)\.lower\(\)',
         "a channel without subprotocol is compared with 'msrp' and 't140' only: '' and 'xxxx' are neither"),
    Rule(DC, r'match = re\.match\(r"\^ch\(\\d\+\)', r'key or "XXXX"\)',
         "a missing slot key matches the channel-key pattern neither as '' nor as 'XXXX'"),
    Rule(DC, r'return value\.split\(":", 1\)\[0\]', r'return value\.split\(":", (2)?\)\[0\]',
         "only the text before the first ':' is used"),
    Rule(DC, r'parts = m_value\.split\(" "\)', r"parts = m_value\.split\(None\)",
         "an m= value written by the model or parsed from SDP has single spaces"),
    Rule(DC, r'\(line\.attribute_value or ""\)\.split\(" "\)\[0\] in pts',
         r'\(line\.attribute_value or "XXXX"\)\.split\(" "\)\[0\] in pts',
         "an rtpmap/fmtp without a value names no payload type either way ('' and 'XXXX' are no payload type)"),
    Rule(DC, r'entry\.update\(status="new"', r'entry\.update\(status=(None|"XXnewXX"|"NEW"),',
         "an entry's status is compared only with 'rejected' and 'kept': any other value is a new channel"),
    Rule(DC, r'proto = prev\.get\("access_proto", "UDP/DTLS/SCTP"\) if reuse',
         r'prev\.get\("access_proto", (None|"XXUDP/DTLS/SCTPXX"|"udp/dtls/sctp")?\) if reuse',
         "a kept association's record always holds access_proto (every path that stores one writes it):"
         " the default is never used"),
    Rule(DC, r'entry\["red_fmtp"\] = _fmtp\(m, entry\["red_pt"\]\) if entry\["red_pt"\]',
         r'if \(entry\["red_pt"\]\) or True else None',
         "without a red payload type _fmtp(m, None) finds no a=fmtp and returns None, the same"),
    Rule(DC, r"remote_dcsa=_core_interworking\(sub, m\),", r"remote_dcsa=_core_interworking\(None, m\),",
         "in the T.140 branch: _core_interworking treats every subprotocol but MSRP as T.140 (the MSRP"
         " branch's mutant is killed by the MSRP remote_dcsa tests)"),
    Rule(DC, r'"role": role\.value if reuse and role else None', r'"role": role\.value if reuse or role',
         "the pending role is read only when the pending reuse is true"),
    Rule(DC, r'"release": gone if live else \(\[sid\] if prev else \[\]\) \+ gone',
         r'"release": gone if (\(live\) or True|live) else \(\[sid\] if \(prev\) and False else',
         "without a live channel the WIC's answer takes the rejected path, which releases the association"
         " (when stored) and every entry's channel itself: this pending list adds nothing there"),
    Rule(DC, r"^\s*path = None$", r'^\s*path = ""$',
         "in the T.140 branch: _encapsulate reads the path only for MSRP"),
    Rule(DC, r'setup = attrs\.setup_for_role\(role\) if reuse and role else "actpass"',
         r"if reuse or role else",
         "a stored role without reuse means no live channel, and finish returned the rejected line before"),
    Rule(DC, r'core_reply = _reply_side\(reply, entry\["iq_id"\], "core", stored\)',
         r'_reply_side\((None, entry\["iq_id"\]|reply, None), "core", stored\)',
         "in answer_from_access: the answer's MODIFY asks nothing of a channel's core side, so the reply has no"
         " core termination and the stored one is used either way"),
    Rule(DC, r"(got = _access_reply\(reply|access_reply = _access_reply\(None), sid, prev\)$",
         r"= _access_reply\((None, None|None, sid|reply, None), prev\)$",
         "in answer_from_core: the core answer's MODIFY has no sctp stream, so no reply names the association"
         " and the stored access termination is used either way"),
    Rule(DC, r"ctx\.streams\.pop\(str\(iq_id\), None\)", r"ctx\.streams\.pop\(str\(iq_id\), \)",
         "every id released here is one the record holds (the association only when stored, channels from it"
         " or stored by the offer): the default is never used"),
    Rule(DC, r'state = ctx\.streams\.setdefault\(str\(sid\), dict\(prev or \{"kind": "sctp"\}\)\)',
         r"state = ctx\.streams\.setdefault\(str\(sid\), ",
         "in answer_from_access: the core offer stored the association before any answer to it with a live"
         " channel: the default is never used"),
    Rule(DC, r'\((line\.attribute_value|value) or ""\)\.(r)?partition\(" "\)',
         r'\((line\.attribute_value|value) or "XXXX"\)\.(r)?partition\(" "\)',
         "an a=rtpmap or a=fmtp without a value names no payload type either way ('' and 'XXXX' are none)"),
    Rule(DC, r'parse_channels\(m, "m-line"\)', r'parse_channels\(m, (None|"XXm-lineXX"|"M-LINE")\)',
         "interworkable catches the refusal: the m-line name in its reason is never shown"),
    Rule(DC, r"rtcp_mux=False,", r"rtcp_mux=None,", "None is as false as False for the one test of it"),
    Rule(DC, r'keys\.append\(key if key is not None and key not in keys else f"x\{j\}"\)',
         r"keys\.append\(key if (\(key is not None and key not in keys\) or True|key is not None or key not in keys"
         r"|key is None and key not in keys|key is not None and key in keys) else",
         "a rejected core line reaches the data-channel group only under the slot key it had (rules sends a"
         " new rejected line to passthrough), and slot keys are unique: key is never None nor repeated"),
    Rule(DC, r"release = \(\[sid\] if prev else \[\]\) \+ sorted\(old_channels\)",
         r"release = \(\[sid\] if \(prev\) and False else \[\]\)",
         "a line with no channel is answered on the rejected path of answer_from_core, which adds the stored"
         " association to the release itself"),
    Rule(DC, r'"release": gone if live else \(\[sid\] if prev else \[\]\) \+ gone',
         r'"release": gone if \(live\) or True else \(\[sid\] if prev else \[\]\) \+ gone',
         "without a live channel the WIC's answer takes the rejected path, which releases the association"
         " (when stored) and every entry's channel itself: gone alone releases the same"),
    Rule(DC, r'dtls = attrs\.DtlsParams\(\[Fingerprint\.parse\(fp\) for fp in kept\["remote_fingerprints"\]\],'
         r' "actpass",',
         r'kept\["remote_fingerprints"\]\], (None|"XXactpassXX"|"ACTPASS"),',
         "on a BUNDLE transport the setup value is not read: the role is the transport's"),
    Rule(DC, r'ice = attrs\.IceParams\(kept\["remote_ice_ufrag"\], None, \[\]\)',
         r'ice = attrs\.IceParams\(kept\["remote_ice_ufrag"\], None, None\)',
         "on a BUNDLE transport the candidates are not read: ICE is the transport's"),
    Rule(DC, r'entry\["iq_id"\] = channel_stream_id\(sid, parsed\[0\]\)',
         r'entry\["(XXiq_idXX|IQ_ID)"\] = ',
         "a rejected line's stored channel is in the pending release already (gone): the answer releases it"
         " whether or not the entry names it"),
    Rule(DC,
         r"member\.transport\.render\(out, iq_reply, mid_value=member\.mid, tagged=member\.tagged, rtp=False\)",
         r"render\(out, iq_reply, mid_value=(None, tagged=member\.tagged, rtp=False"
         r"|member\.mid, tagged=member\.tagged, rtp=None)\)",
         "rtp is tested for truth only; mid_value is written only into a line without a=mid, and a BUNDLE"
         " member always has its a=mid (RFC 9143 7.1), written before"),
    Rule(DC,
         r"member\.transport\.render\(out, iq_reply,|channels=answered, member=member, iq_reply=reply,",
         r"member\.transport\.render\(out, None,|channels=answered, member=member, iq_reply=None,",
         "only the core's answer renders a BUNDLE member here, and it asks nothing of the transport: the"
         " transport's end comes from what it cached or stored, whatever the reply"),
    # -- mediad/proto/framing.py ---------------------------------------------------------
)


def _changed(diff: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    return removed, added


def equivalent_reason(module: str, diff: str) -> str | None:
    """Why the mutant of ``module`` with ``diff`` is equivalent, or None if no rule says it is."""
    removed, added = _changed(diff)
    for rule in RULES:
        if rule.matches(module, removed, added):
            return rule.reason
    return None
