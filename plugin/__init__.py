"""e2ae edge: the Kamailio plugin (KEMI glue in kemi.py, logic in edge.py)."""
