"""baresip, default configuration, as a plain RTP/AVP user agent at the core.

The core routes ``sip:tone@`` to its user agent, here baresip 1.0 with its default
profile (``RTP/AVP``, no media encryption, PCMU), auto-answering.  A JsSIP phone in
Chromium calls it over WSS through the edge; audio flows both ways (the browser's
getStats, and what baresip decoded from the browser, dumped by its sndfile module).

The edge runs with ``[policy] core_rtp_profile = avp``.  ``auto`` (RTP/AVPF first,
RTP/AVP again in a new branch of the same INVITE transaction after a 488) does not
reach baresip: baresip refuses the AVPF offer with 488 and then the retry, within its
first transaction's lifetime (Timer I, 5 s over UDP), with ``482 Loop Detected``:
RFC 3261 8.2.2.2's merged-request rule (same From tag, Call-ID and CSeq).  The
retry itself is shown against a user agent without that rule in
``test_webrtc_browsers.py``; :func:`test_auto_meets_bare_sips_merged_request_rule`
pins what baresip does with it, so a change on either side is seen.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from deploy.demo_core import CORE_UA_HOST, DOMAIN
from tests.integration.chromium_peer import interfaces, private_loopback_netns
from tests.integration.edge_harness import stop_process
from tests.integration.test_edge_media import _loud_frames, _tone_wav
from tests.integration.test_webrtc_browsers import (
    MEDIA_SECONDS, MIN_PACKETS, World, _call, _hang_up, _register, _wait_clean,
)
from tests.integration.webrtc_harness import web_ready

pytestmark = [pytest.mark.integration, pytest.mark.skipif(web_ready() is not None, reason=str(web_ready()))]


@pytest.fixture(scope="module", params=["avp", "auto"])
def world(request):
    with private_loopback_netns():
        assert interfaces() == ["lo"]
        # baresip binds its RTP socket to the wildcard address: its packets leave from
        # the loopback's primary address, not the one its SDP names, as a core behind
        # NAT's would.  mediad latches onto that source (docs/mediad.md).
        w = World(policy_extra=f"core_rtp_profile = {request.param}\n", mediad_extra="core_source = latch\n")
        w.profile = request.param
        try:
            w.start()
            yield w
        finally:
            w.stop()


def _baresip(world: World, work) -> subprocess.Popen:
    _tone_wav(work / "tone.wav", seconds=30)
    # The core routes sip:tone@ to its UA: baresip answers for the user "tone".
    (work / "accounts").write_text(f"<sip:tone@{CORE_UA_HOST}>;regint=0;answermode=auto;audio_codecs=PCMU\n")
    (work / "config").write_text(
        f"sip_listen {CORE_UA_HOST}:{world.core_ua_port}\nnet_interface {CORE_UA_HOST}\n"
        "audio_player aubridge,sink\naudio_alert aubridge,sink\n"
        f"audio_source aufile,{work / 'tone.wav'}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        f"snd_path {work}\n")
    log = work / "baresip.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["baresip", "-f", str(work), "-s", "-t", "25"], cwd=work, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10
    while "baresip is ready" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


@pytest.mark.req("SRTP-1")
@pytest.mark.timeout(120)
def test_baresip_as_a_plain_rtp_avp_ua_at_the_core_answers_a_browser_call(world, tmp_path):
    if world.profile != "avp":
        pytest.skip("core_rtp_profile = auto: test_auto_meets_bare_sips_merged_request_rule")
    browser, _ = _register(world, "jssip", "baresip-caller")
    proc = _baresip(world, tmp_path)
    log = tmp_path / "baresip.log"
    try:
        setup_ms = _call(world, browser, f"sip:tone@{DOMAIN}")
        time.sleep(MEDIA_SECONDS + 1)
        stats = browser.eval("phone.stats()")
        browser.eval("phone.hangup()")
        time.sleep(1.0)
    finally:
        _hang_up(browser)
        stop_process(proc)
    text = log.read_text(errors="replace")
    assert stats and stats.get("inbound") and stats.get("outbound"), (stats, text[-3000:])
    print(f"baresip: call setup {setup_ms} ms; browser received {stats['inbound']['packetsReceived']}, "
          f"sent {stats['outbound']['packetsSent']}")
    # baresip got one INVITE, offering RTP/AVP (its own profile), and answered it.
    assert text.count("INVITE sip:tone@") == 1, text[-3000:]
    assert "RTP/AVP " in text and "RTP/AVPF" not in text, text[-3000:]
    assert stats["transport"]["dtlsState"] == "connected", stats["transport"]
    assert stats["inbound"]["packetsReceived"] >= MIN_PACKETS and stats["inbound"]["audioLevel"] > 0.05, stats["inbound"]
    assert stats["outbound"]["packetsSent"] >= MIN_PACKETS
    # What baresip decoded from the browser: its fake microphone's beeps, over plain RTP/AVP.
    decoded = list(tmp_path.glob("dump-*-dec.wav"))
    assert decoded, text[-3000:]
    assert _loud_frames(decoded[0]) >= 3, text[-3000:]
    _wait_clean(world)


@pytest.mark.timeout(120)
def test_auto_meets_bare_sips_merged_request_rule(world, tmp_path):
    """Under auto the edge retries baresip's 488 as RTP/AVP; baresip answers the retry,
    a new branch with the same From tag, Call-ID and CSeq, 482 (RFC 3261 8.2.2.2), and
    the caller gets that final answer: the call fails cleanly, nothing is left."""
    if world.profile != "auto":
        pytest.skip("core_rtp_profile = avp sends RTP/AVP first")
    browser, _ = _register(world, "jssip", "baresip-auto")
    fallback = "the core refused RTP/AVPF (488): offering RTP/AVP"
    fallbacks = world.edge.kamailio_log_text().count(fallback)
    proc = _baresip(world, tmp_path)
    try:
        with pytest.raises(AssertionError, match=r"482 Loop Detected"):
            _call(world, browser, f"sip:tone@{DOMAIN}")
    finally:
        _hang_up(browser)
        stop_process(proc)
    assert world.edge.kamailio_log_text().count(fallback) == fallbacks + 1
    _wait_clean(world)
