"""What the data path reports about each request, and the interface that consumes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.backends.base import Backend, Endpoint
    from gateway.request import RequestHead
    from gateway.snapshot import CompiledRule


class RequestRecord:
    """One finished request, filled in by the data path and handed to telemetry once."""

    __slots__ = (
        "attributes",
        "backend",
        "end",
        "endpoint",
        "grpc_status",
        "head",
        "links",
        "protocol",
        "request_bytes",
        "request_id",
        "response_bytes",
        "response_flags",
        "rule",
        "start",
        "status",
        "upstream_failure",
        "version",
    )

    def __init__(
        self, head: RequestHead, start: float, request_id: str, protocol: str = "http"
    ) -> None:
        self.head = head
        self.start = start  # time.perf_counter() when the head was parsed
        self.end = 0.0  # time.perf_counter() when the last response byte was written
        self.request_id = request_id
        self.protocol = protocol  # Istio request_protocol label: "http" | "grpc"
        self.grpc_status = ""  # gRPC requests: the grpc-status the client got
        self.version = "1.1"  # the client's HTTP version: "1.1" or "2"
        self.rule: CompiledRule | None = None
        self.backend: Backend | None = None
        self.endpoint: Endpoint | None = None
        self.status = 0
        self.request_bytes = 0  # body bytes received from the client
        self.response_bytes = 0  # body bytes sent to the client
        # Envoy-style response flags: "-" none, "NR" no route, "UH" no healthy upstream,
        # "UF" upstream connect failure, "UT" upstream timeout, "DC" downstream disconnect,
        # "UC" upstream connection termination, "URX" retry limit exceeded.
        self.response_flags = "-"
        # Why the last failed dial failed: "" (none), "tls_verify", "tls_handshake",
        # "connect_refused", "connect_timeout" or "connect_error".
        self.upstream_failure = ""
        # What a backend, stage or tap added about the request (the model asked for, token
        # usage ...): span attributes and access-log fields. None until one adds something.
        self.attributes: dict[str, Any] | None = None
        # Spans this request's span links to (traceparent, link attributes): an MCP tool call
        # to the LLM answer that asked for it. None until one is added.
        self.links: list[tuple[str, dict[str, Any]]] | None = None


class TraceContext(Protocol):
    """Per-request tracing state: the traceparent to send upstream, and the span to end."""

    traceparent: str


class Telemetry(Protocol):
    """Called by the data path: ``start`` when a head is parsed, ``finish`` once when it is done."""

    def start(self, head: RequestHead) -> TraceContext: ...

    def finish(self, trace: TraceContext, record: RequestRecord) -> None: ...
