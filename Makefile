# e2ae edge: developer shortcuts.  The test suite is `deploy/e2ae test`.
#
#   make bench        relay throughput, DTLS handshakes and memory, mediad beside
#                     rtpengine (minutes; installs rtpengine-daemon and libsrtp2-dev
#                     when missing, builds the load generator); see docs/performance.rst
#   make bench-smoke  the same path in seconds, no targets
#   make soak         mediad's RSS over 20,000 calls (about 4 minutes); SOAK_ARGS for options
#   make bench-iq     the cost of one Iq round trip on the control channel, and the sizes that fit
#   make bench-rules  one call's SDP rules in one process, from the sources and from the mypyc build
#   make profile      where the edge's processes spend their time per call at 100 calls/s
#                     (perf and py-spy; installs linux-perf and py-spy when missing)
#   make fuzz         every fuzz sub-target below (long; CPU-bound, runs under nice)
#   make fuzz-parsers coverage-guided fuzzing (atheris) of every parser that takes bytes
#                     from outside, 10^6 inputs per target; see docs/testing.rst
#   make fuzz-sip     the SIP-level fuzz against a real edge started for it (Redis,
#                     mediad, Kamailio): thousands of mutated INVITE, re-INVITE, UPDATE,
#                     PRACK and 200 OK, concurrently; prints the seed, messages sent, final
#                     answers by status, violations by kind and leftovers (minutes)
#   make mutate       mutation testing (mutmut) of the pure modules against their own
#                     tests, per-module table; see docs/testing.rst
#
# Options for the full run go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--rounds 5 --streams 1000";
# for the profile in PROFILE_ARGS, e.g. make profile PROFILE_ARGS="--rate 200 --seconds 30";
# for the parser fuzzing in FUZZ_ARGS, e.g. make fuzz-parsers FUZZ_ARGS="sdp_rules --runs 100000";
# the SIP fuzz's in FUZZ_SIP_ARGS, e.g. make fuzz-sip FUZZ_SIP_ARGS="--cases 5000 --seed 1a2b --save /tmp/found";
# for mutation testing in MUTATE_ARGS, e.g. make mutate MUTATE_ARGS="sdp_rules/bandwidth.py".

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
SOAK_ARGS ?=
PROFILE_ARGS ?=
FUZZ_ARGS ?=
FUZZ_SIP_ARGS ?= --cases 2000
MUTATE_ARGS ?=
NICE ?= nice -n 19

.PHONY: bench bench-smoke soak bench-iq bench-rules profile fuzz fuzz-parsers fuzz-sip mutate

$(PYTHON):
	deploy/e2ae setup

bench: $(PYTHON)
	$(PYTHON) -m bench.run $(BENCH_ARGS)

bench-smoke: $(PYTHON)
	$(PYTHON) -m bench.run --smoke $(BENCH_ARGS)

soak: $(PYTHON)
	$(PYTHON) -m bench.soak $(SOAK_ARGS)

bench-iq: $(PYTHON)
	$(PYTHON) -m bench.iq_roundtrip

bench-rules: $(PYTHON)
	$(PYTHON) -m bench.rules

profile: $(PYTHON)
	$(PYTHON) -m bench.profile $(PROFILE_ARGS)

# Each kind of fuzzing is a sub-target of fuzz.
fuzz: fuzz-parsers fuzz-sip

fuzz-parsers: $(PYTHON)
	$(NICE) $(PYTHON) -m fuzz $(FUZZ_ARGS)

fuzz-sip: $(PYTHON)
	$(PYTHON) -m tests.sipfuzz $(FUZZ_SIP_ARGS)

mutate: $(PYTHON)
	$(PYTHON) -c "import mutmut" 2>/dev/null || $(PYTHON) -m pip install -q -c constraints.txt --config-settings editable_mode=compat -e ".[test,fast,mutate]"
	$(NICE) $(PYTHON) -m tools.mutate $(MUTATE_ARGS)
