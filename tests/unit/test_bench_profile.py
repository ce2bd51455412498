"""The profile's pure parts: py-spy's collapsed stacks, perf's report lines, Redis's commandstats, categories."""

from __future__ import annotations

import pytest

from bench.profile import (KAMAILIO_CATEGORIES, KAMAILIO_OPERATIONS, MEDIAD_CATEGORIES, blocked, categorize, leaf_module,
                           leaf_shares, parse_collapsed, parse_commandstats, parse_perf_report, project_lines, shares)

ROUTE = "ksr_request_route (plugin/kemi.py:216)"
REPLY = "ksr_onreply_edge (plugin/kemi.py:275)"
HANDLE = "Edge.handle (plugin/edge.py:210)"
COLLAPSED = "\n".join([
    # The Iq client's JSON is the Iq client's, not "JSON" on its own.
    f"{ROUTE};_apply (plugin/kemi.py:170);{HANDLE};LazyIqClient.request (plugin/edge.py:585);"
    "IqClient.request (mediad/io/client.py:90);dumps (json/__init__.py:231) 6",
    f"{REPLY};_apply (plugin/kemi.py:170);{HANDLE};DialogStore.script (plugin/state.py:292);"
    "DialogStore._evalsha (plugin/state.py:318);Connection.read_response (redis/connection.py:650) 3",
    f"{REPLY};_apply (plugin/kemi.py:170);{HANDLE};DialogRecord.to_json (plugin/record.py:215) 2",
    f"{ROUTE};_relay (plugin/kemi.py:206) 4",
    f"{ROUTE};_apply (plugin/kemi.py:160);_pv (plugin/kemi.py:95) 1",
    "ksr_dialog_event (plugin/kemi.py:290);Edge.release (plugin/edge.py:460);plan (sdp_rules/plan.py:10) 4",
    "garbage line without a count",
])


def test_collapsed_stacks_are_read_root_first_with_their_counts():
    samples = parse_collapsed(COLLAPSED)
    assert len(samples) == 6 and sum(c for _, c in samples) == 20
    assert samples[3] == ([ROUTE, "_relay (plugin/kemi.py:206)"], 4)


def test_each_stack_goes_to_the_first_category_one_of_its_frames_matches():
    by_category = shares(parse_collapsed(COLLAPSED), KAMAILIO_CATEGORIES)
    assert by_category == pytest.approx({
        "mediad Iq round trips (client: encode, seal, send, wait, open, decode)": 0.30,
        "Redis round trips (redis-py, the plugin's scripts)": 0.15,
        "dialog records and their store (plugin/record.py, plugin/state.py)": 0.10,
        "Kamailio relaying (KSR.tm.t_relay and the calls around it)": 0.20,
        "message in and out of Python (KSR.pv reads, set_body)": 0.05,
        "SDP rules (parse, plan, render)": 0.20,
    })
    by_operation = shares(parse_collapsed(COLLAPSED), KAMAILIO_OPERATIONS)
    assert by_operation == pytest.approx({"requests (the INVITE's offer, ACK, BYE)": 0.55,
                                          "replies (the 200's answer)": 0.25,
                                          "release at dialog end (dialog:end event)": 0.20})


def test_a_stack_matching_nothing_is_other_python_and_mediad_has_its_own_categories():
    assert categorize(["<module> (<string>:1)"], KAMAILIO_CATEGORIES) == "other Python"
    loop = "run_forever (asyncio/base_events.py:608)"
    assert categorize([loop, "Control.datagram_received (mediad/io/control.py:120)", "loads (json/__init__.py:346)"],
                      MEDIAD_CATEGORIES) == "control: frames, AES-GCM, JSON, dispatch"
    assert categorize([loop, "_Sealer.open (mediad/proto/controlwire.py:260)"], MEDIAD_CATEGORIES) == \
        "control: frames, AES-GCM, JSON, dispatch"
    assert categorize([loop, "Store.save (mediad/state.py:80)", "Redis.execute_command (redis/client.py:600)"],
                      MEDIAD_CATEGORIES) == "Redis writes (redis-py)"
    assert categorize([loop], MEDIAD_CATEGORIES) == "event loop (asyncio, uvloop)"
    assert shares([], MEDIAD_CATEGORIES) == {}


def test_perf_report_and_redis_commandstats_are_read():
    report = ("# Samples: 1K of event 'cpu-clock'\n#\n    62.30%  1234  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault\n"
              "     1.50%  1234  tm.so                 [.] t_relay_to\n\n")
    assert parse_perf_report(report) == [(62.3, ["1234", "libpython3.11.so.1.0", "[.] _PyEval_EvalFrameDefault"]),
                                         (1.5, ["1234", "tm.so", "[.] t_relay_to"])]
    info = "# Commandstats\r\ncmdstat_evalsha:calls=400,usec=14280,usec_per_call=35.70,rejected_calls=0\r\n" \
           "cmdstat_set:calls=600,usec=2230,usec_per_call=3.72\r\n"
    assert parse_commandstats(info) == {"evalsha": {"calls": 400, "usec": 14280}, "set": {"calls": 600, "usec": 2230}}


def test_within_a_category_samples_are_split_by_the_module_of_their_innermost_frame():
    assert leaf_module("dumps (json/__init__.py:231)") == "json"
    assert leaf_module("new (hmac.py:184)") == "hmac"
    assert leaf_module("IqClient.request (/srv/e2ae/mediad/io/client.py:90)") == "mediad/io/client.py"
    assert leaf_module("<module> (<string>:4)") == "<string>"
    leaves = leaf_shares(parse_collapsed(COLLAPSED), KAMAILIO_CATEGORIES)
    assert leaves["mediad Iq round trips (client: encode, seal, send, wait, open, decode)"] == {"json": 1.0}
    assert leaves["Redis round trips (redis-py, the plugin's scripts)"] == {"redis": 1.0}


def test_time_goes_to_the_innermost_line_of_the_projects_own_code():
    lines = project_lines(parse_collapsed(COLLAPSED) + [(["<module> (runpy.py:1)"], 5)])
    assert lines == pytest.approx({
        "IqClient.request (mediad/io/client.py:90)": 6 / 25,
        "outside the project": 5 / 25,
        "_relay (plugin/kemi.py:206)": 4 / 25,
        "plan (sdp_rules/plan.py:10)": 4 / 25,
        "DialogStore._evalsha (plugin/state.py:318)": 3 / 25,
        "DialogRecord.to_json (plugin/record.py:215)": 2 / 25,
        "_pv (plugin/kemi.py:95)": 1 / 25,
    })
    assert list(lines)[0] == "IqClient.request (mediad/io/client.py:90)"
    assert project_lines([(["f (/root/venv/x.py:3)", "_sane (/srv/e2ae/plugin/kemi.py:420)"], 1)]) == {
        "_sane (plugin/kemi.py:420)": 1.0}


def test_a_worker_blocked_on_a_reply_is_told_apart_from_one_that_runs():
    """py-spy samples an embedded interpreter blocked in recv as running: those stacks are
    left out of the categories (counted as waiting)."""
    redis_read = "HiredisParser.read_from_socket (/v/lib/python3.11/site-packages/redis/_parsers/hiredis.py:192)"
    iq_read = "IqClient._receive (/srv/e2ae/mediad/io/client.py:261)"
    assert blocked([ROUTE, "DialogStore._evalsha (plugin/state.py:459)", redis_read])
    assert blocked([ROUTE, "IqClient.request (mediad/io/client.py:90)", iq_read])
    assert not blocked([ROUTE, "DialogStore._evalsha (plugin/state.py:458)",
                        "Connection.send_packed_command (redis/connection.py:1360)"])
    assert not blocked([ROUTE, "IqClient.send (mediad/io/client.py:140)"])
    assert not blocked([])


def test_mediads_loop_waiting_in_epoll_is_told_apart_from_its_callbacks():
    main = ["_run_module_as_main (<frozen runpy>:198)", "main (mediad/__main__.py:58)", "run (uvloop/__init__.py:92)"]
    assert blocked(main + ["Runner.run (asyncio/runners.py:118)"], "media")
    assert not blocked(main + ["Runner.run (asyncio/runners.py:118)",
                               "ControlConnection._reply (mediad/io/control.py:271)"], "media")
    assert not blocked(main + ["Runner.run (asyncio/runners.py:118)"], "kamailio")
    assert not blocked(["IqClient._receive (/srv/e2ae/mediad/io/client.py:261)"], "media")
