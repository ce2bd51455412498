# e2ae edge: developer shortcuts.  The test suite is `deploy/e2ae test`.
#
#   make bench        relay throughput, DTLS handshakes and memory, mediad beside
#                     rtpengine (minutes; installs rtpengine-daemon and libsrtp2-dev
#                     when missing, builds the load generator); see docs/performance.rst
#   make bench-smoke  the same path in seconds, no targets
#   make fuzz         every fuzz sub-target below (long; CPU-bound, runs under nice)
#   make fuzz-parsers coverage-guided fuzzing (atheris) of every parser that takes bytes
#                     from outside, 10^6 inputs per target; see docs/testing.rst
#   make mutate       mutation testing (mutmut) of the pure modules against their own
#                     tests, per-module table; see docs/testing.rst
#
# Options for the full run go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--rounds 5 --streams 1000";
# for the parser fuzzing in FUZZ_ARGS, e.g. make fuzz-parsers FUZZ_ARGS="sdp_rules --runs 100000";
# for mutation testing in MUTATE_ARGS, e.g. make mutate MUTATE_ARGS="sdp_rules/bandwidth.py".

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
FUZZ_ARGS ?=
MUTATE_ARGS ?=
NICE ?= nice -n 19

.PHONY: bench bench-smoke fuzz fuzz-parsers mutate

$(PYTHON):
	deploy/e2ae setup

bench: $(PYTHON)
	$(PYTHON) -m bench.run $(BENCH_ARGS)

bench-smoke: $(PYTHON)
	$(PYTHON) -m bench.run --smoke $(BENCH_ARGS)

# Each kind of fuzzing is a sub-target of fuzz.
fuzz: fuzz-parsers

fuzz-parsers: $(PYTHON)
	$(NICE) $(PYTHON) -m fuzz $(FUZZ_ARGS)

mutate: $(PYTHON)
	$(PYTHON) -c "import mutmut" 2>/dev/null || $(PYTHON) -m pip install -q -c constraints.txt --config-settings editable_mode=compat -e ".[test,fast,mutate]"
	$(NICE) $(PYTHON) -m tools.mutate $(MUTATE_ARGS)
