# e2ae edge: developer shortcuts.  The test suite is `deploy/e2ae test`.
#
#   make bench        relay throughput, DTLS handshakes and memory, mediad beside
#                     rtpengine (minutes; installs rtpengine-daemon and libsrtp2-dev
#                     when missing, builds the load generator); see docs/performance.rst
#   make bench-smoke  the same path in seconds, no targets
#   make profile      where the edge's processes spend their time per call at 100 calls/s
#                     (perf and py-spy; installs linux-perf and py-spy when missing)
#
# Options for the full run go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--rounds 5 --streams 1000";
# for the profile in PROFILE_ARGS, e.g. make profile PROFILE_ARGS="--rate 200 --seconds 30".

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
PROFILE_ARGS ?=

.PHONY: bench bench-smoke profile

$(PYTHON):
	deploy/e2ae setup

bench: $(PYTHON)
	$(PYTHON) -m bench.run $(BENCH_ARGS)

bench-smoke: $(PYTHON)
	$(PYTHON) -m bench.run --smoke $(BENCH_ARGS)

profile: $(PYTHON)
	$(PYTHON) -m bench.profile $(PROFILE_ARGS)
