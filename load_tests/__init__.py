"""Load tests for batchserve.

What users run: ``run`` (the locust scenarios in ``scenarios/``), ``bench`` (``batchserve bench``),
``soak`` and ``generator`` (the open- and closed-loop load generator everything drives servers with).
``harness``: the local server and the payloads they share. ``research``: the benchmarks behind the
figures in docs/, runnable from a checkout only.
"""
