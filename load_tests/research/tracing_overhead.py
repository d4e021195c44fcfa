"""What tracing costs per request: the server's CPU with tracing off and sampling 1 % and 100 %, in one run.

    python load_tests/research/tracing_overhead.py [--requests 8000] [--rounds 5] [--modes off,1%,100%]
        [--checkout /path/to/another/checkout ...]
    python load_tests/research/tracing_overhead.py --parts

Each round serves the synthetic ``syn`` model in a fresh process (tests/harness.py: the in-protocol HTTP path)
and sends ``--requests`` V2 JSON requests over 16 keep-alive connections; that process's CPU time over them (every
thread: the SDK's span exporter too, flushed before the clock stops) per request is the round's figure. With
tracing on, spans go over OTLP/HTTP to a receiver in another process (tests/otlp.py), not counted. Modes and
checkouts alternate round by round, so a shared machine's drift hits each alike; prints each one's median and
its difference to the first. ``--checkout`` adds another tree (``off`` only unless it has tracing): the same
run compares a change with tracing off against the code before it.

A busy machine's noise (tens of µs a round) hides a few µs: ``--parts`` times the parts instead, each the best
of several repeats: the HTTP entry's decision with tracing off and on (an unsampled request, with and without a
caller's unsampled ``traceparent``), and the CPU of one sampled request's six spans, built and encoded as the
OTLP exporter encodes them (its HTTP post, per 512 spans, left out); at 1 % a request costs the decision plus a
hundredth of a sampled one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]  # this checkout
MODES = {"off": None, "1%": "0.01", "100%": "1"}


async def _round(mode: str, requests: int, endpoint: str) -> float:
    from tests.harness import request_bytes, serving, synthetic_model
    from tests.payloads import INFER, row_body

    ratio = MODES[mode]
    if ratio is not None:
        os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                           "OTEL_TRACES_SAMPLER_ARG": ratio})
    root = synthetic_model(Path(tempfile.mkdtemp()) / "repo", "syn", max_batch_size=16)
    body = request_bytes("POST", INFER, row_body(1.0))
    async with serving(root) as served:
        connections = [await served.connect() for _ in range(16)]

        async def send(connection: object, count: int) -> None:
            for _ in range(count):
                await connection.send(body)  # type: ignore[attr-defined]
                assert (await connection.response()).status == 200  # type: ignore[attr-defined]

        await asyncio.gather(*(send(c, 20) for c in connections))  # warm: connections, caches, series
        started = time.process_time()
        await asyncio.gather(*(send(c, requests // len(connections)) for c in connections))
        if ratio is not None:
            from server.observability import tracing

            assert tracing.TRACER is not None
            tracing.TRACER.force_flush()  # the exporter's work for these spans counts too
        return (time.process_time() - started) / requests * 1e6


def parts() -> None:
    import timeit
    import types

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from server.admission.routes import route
    from server.http.fastpath import inference_request
    from server.observability import spans, tracing

    os.environ.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "0"})
    found = route("POST", "/v2/models/syn/infer", False)
    headers = [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"), (b"accept-encoding", b"gzip, deflate"),
               (b"connection", b"keep-alive"), (b"content-type", b"application/json"), (b"content-length", b"80")]
    caller = [*headers, (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]

    def best(run: object, number: int = 100_000) -> float:
        return min(timeit.repeat(run, number=number, repeat=7)) / number * 1e9  # type: ignore[arg-type]

    tracing.TRACER = None
    off = best(lambda: inference_request(found, headers))
    tracing.TRACER = active = tracing.Tracing("server")
    root, unsampled = best(lambda: inference_request(found, headers)), best(lambda: inference_request(found, caller))

    class Encoded(SpanExporter):
        def export(self, batch: object) -> SpanExportResult:
            encode_spans(batch).SerializePartialToString()  # type: ignore[arg-type]
            return SpanExportResult.SUCCESS

    active.processors = [BatchSpanProcessor(Encoded(), max_queue_size=100_000, schedule_delay_millis=100_000)]
    series = types.SimpleNamespace(metrics=types.SimpleNamespace(exemplar=lambda *_: None, request_duration=None),
                                   labels=("syn", "1", "v2"))

    class Codec:
        def decode(self, request: object, mv: object) -> None: ...
        def encode(self, request: object, mv: object, outputs: object) -> bytes:
            return b""

    def sampled_request() -> None:
        request = types.SimpleNamespace(started=time.perf_counter(), codec=Codec(), trace=None, mv=None,
                                        protocol="v2", model="syn", version=None, signature=None)
        spans.start_request(active, request, random.getrandbits(128) or 1, None, None)
        request.codec.decode(request, None)
        ended = spans.start_batch(active, [(request.trace, 0.001)], 1, ("syn", "1", ""))
        spans.compute_span(active, spans.BATCH.get() or "", 0.001, 1)
        ended(True)
        request.codec.encode(request, None, None)
        request.trace.finish(request, 200, None, None, 0.002, series)

    costs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(2000):
            sampled_request()
        active.force_flush()
        costs.append((time.process_time() - started) / 2000 * 1e6)
    one = min(costs)
    alone, with_caller = (root - off) / 1000 + one / 100, (unsampled - off) / 1000 + one / 100
    print(f"HTTP entry, tracing off: {off:.0f} ns; on, not sampled: +{root - off:.0f} ns, with the caller's unsampled "
          f"traceparent: +{unsampled - off:.0f} ns\none sampled request's six spans, built and encoded: {one:.0f} µs "
          f"of CPU\nat 1 %: +{alone:.2f} µs a request (+{with_caller:.2f} µs with unsampled callers' traceparents)")


def _child(mode: str, requests: int, endpoint: str) -> None:
    print(json.dumps(asyncio.run(_round(mode, requests, endpoint))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="off,1%,100%")
    parser.add_argument("--checkout", action="append", default=[], help="another tree, measured with tracing off")
    parser.add_argument("--parts", action="store_true", help="time the parts instead (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests, args.endpoint)
        return
    if args.parts:
        parts()
        return
    receiver = subprocess.Popen([sys.executable, "-c", "from tests.otlp import OtlpReceiver; import sys, time; "
                                 "r = OtlpReceiver(); print(r.endpoint, flush=True); sys.stdin.read()"],
                                cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)}, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    endpoint = receiver.stdout.readline().strip()
    runs = [(str(HERE), mode) for mode in args.modes.split(",")] + [(tree, "off") for tree in args.checkout]
    results: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    try:
        for _ in range(args.rounds):
            for tree, mode in runs:
                out = subprocess.run([sys.executable, __file__, "--child", mode, "--requests", str(args.requests),
                                      "--endpoint", endpoint], cwd=tree, env={**env, "PYTHONPATH": tree},
                                     capture_output=True, text=True, check=True)
                results[(tree, mode)].append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        receiver.kill()
        receiver.wait()
    base = statistics.median(results[runs[0]])
    print(f"{args.requests} requests a round, {args.rounds} rounds, median CPU µs per request (in-process client "
          "and server together):")
    for (tree, mode), values in results.items():
        median = statistics.median(values)
        print(f"  {tree:<28} {mode:>5}  {median:8.1f}  ({median - base:+.1f})   rounds: "
              + " ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
