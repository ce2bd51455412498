"""The e2ae edge benchmark suite (``make bench``; see docs/performance.rst)."""
