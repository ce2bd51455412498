"""Coverage-guided fuzzing of the parsers that take bytes from outside (``make fuzz``).

:mod:`fuzz.targets` defines the targets and what each checks, :mod:`fuzz.seeds`
their seed inputs, :mod:`fuzz.worker` runs one target under atheris
(libFuzzer), and ``python -m fuzz`` runs them all and prints a table.
"""
