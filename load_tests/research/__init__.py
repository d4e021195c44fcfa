"""Benchmarks behind the figures in docs/ (not shipped in the wheel): run from a checkout,
``python -m load_tests.research.<name> --help``."""
