"""A real OTLP/HTTP trace receiver on 127.0.0.1 for the tracing tests: ``POST /v1/traces`` in protobuf (what the
SDK's exporter sends), decoded with opentelemetry-proto, each span kept with its resource's attributes.

Point a server at it as a user would, through the environment (``env``): ``OTEL_EXPORTER_OTLP_ENDPOINT`` and a
short batch-processor delay, so spans arrive within a few ms of their end; wait for them with ``wait_for``.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the otel extra (pip install 'batchserve[otel]', "
                    "in the dev extra)")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class Span:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent: str  # the parent span's id, "" for a root
    name: str
    kind: int  # opentelemetry.proto's SpanKind: 2 is SERVER
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id) each
    status: int  # 0 unset, 1 ok, 2 error
    message: str
    start: int  # ns since the epoch
    end: int
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class OtlpReceiver:
    """Runs in a thread until ``close``; ``spans`` are every span received so far."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)  # notified as each export is received
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, **more: str) -> dict[str, str]:
        """The environment that points a server's exporter here, batches flushed every 20 ms."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20",
                "OTEL_SERVICE_NAME": "batchserve-test", **more}

    def _receive(self, message: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    spans.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind,
                                      {a.key: _value(a.value) for a in s.attributes},
                                      [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                                      s.status.code, s.status.message, s.start_time_unix_nano, s.end_time_unix_nano,
                                      resource))
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1
            self._arrived.notify_all()

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, trace_id: str) -> dict[str, list[Span]]:
        """A trace's spans by name."""
        spans: dict[str, list[Span]] = {}
        for span in self.trace(trace_id):
            spans.setdefault(span.name, []).append(span)
        return spans

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        """Wait until ``condition()`` is truthy, looking again each time an export arrives."""
        with self._arrived:
            result = self._arrived.wait_for(condition, timeout)
        if not result:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; spans: {self.spans}")
        return result

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
