"""What the load tests and benchmarks share: a local server, request payloads, the raw in-process limit."""
