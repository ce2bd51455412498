# e2ae edge: developer shortcuts.  The test suite is `deploy/e2ae test`.
#
#   make bench        relay throughput, DTLS handshakes and memory, mediad beside
#                     rtpengine (minutes; installs rtpengine-daemon and libsrtp2-dev
#                     when missing, builds the load generator); see docs/performance.rst
#   make bench-smoke  the same path in seconds, no targets
#   make soak         mediad's RSS over 20,000 calls (about 4 minutes); SOAK_ARGS for options
#   make bench-iq     the cost of one Iq round trip on the control channel, and the sizes that fit
#
# Options for the full run go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--rounds 5 --streams 1000".

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
SOAK_ARGS ?=

.PHONY: bench bench-smoke soak bench-iq

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
