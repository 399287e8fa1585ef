"""W3C trace context in and out, and one OpenTelemetry SERVER span per sampled request.

Unsampled requests never touch the SDK: :meth:`Tracer.start` parses ``traceparent`` itself, decides
from a plan precomputed from the provider's sampler, and formats the outgoing header (same trace-id,
a new span-id, flags preserved). Only a sampled request builds an SDK span, whose id becomes the
parent id the upstream sees.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from random import getrandbits
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.span import NonRecordingSpan, SpanContext, TraceFlags, TraceState

if TYPE_CHECKING:
    from gateway.observability.record import RequestRecord
    from gateway.request import RequestHead

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# The common case (version 00, exact length) is checked with one regex and sliced.
_version00 = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}").fullmatch
_SAMPLED_DIGITS = frozenset("13579bdf")  # the flags' low bit, read from its last hex digit
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_LOW64 = (1 << 64) - 1

# A sampling plan entry: True/False decided, an int is a TraceIdRatioBased bound applied to the
# trace-id, None means "ask the SDK" (a root under a ratio sampler, or a sampler we do not know).
Plan = bool | int | None


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` (lower-case hex) of a W3C traceparent; None if invalid."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def _plan(sampler: Sampler, parent_sampled: bool | None) -> Plan:
    """What ``sampler`` decides for a remote parent (sampled or not) or a root (None)."""
    if isinstance(sampler, StaticSampler):
        return sampler.should_sample(None, 0, "").decision.is_sampled()
    if isinstance(sampler, TraceIdRatioBased):
        if sampler.bound >= _LOW64 + 1:
            return True
        if sampler.bound <= 0:
            return False
        return sampler.bound if parent_sampled is not None else None
    if isinstance(sampler, ParentBased):
        # ParentBased keeps its delegates in private attributes; if a future SDK renames them,
        # fall back to letting the SDK decide rather than guessing.
        if parent_sampled is None:
            name = "_root"
        else:
            name = "_remote_parent_sampled" if parent_sampled else "_remote_parent_not_sampled"
        delegate = getattr(sampler, name, None)
        return _plan(delegate, parent_sampled) if isinstance(delegate, Sampler) else None
    return None


class Propagation:
    """Trace context of a request: the traceparent sent upstream (no span: not sampled)."""

    __slots__ = ("traceparent",)
    span: Any = None

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    @property
    def trace_id(self) -> str:
        """The 32-hex-digit trace id."""
        return self.traceparent[3:35]


# Unsampled requests make their Propagation without running __init__ (a Python frame through
# type.__call__): object.__new__ and one attribute store are a third of the cost.
_new_propagation = object.__new__


class SpanTrace(Propagation):
    """Trace context of a sampled request: also the SDK span to end and its wall-clock start."""

    __slots__ = ("span", "start_ns")

    def __init__(self, traceparent: str, span: Any, start_ns: int) -> None:
        self.traceparent = traceparent
        self.span = span
        self.start_ns = start_ns


class Tracer:
    """Propagates W3C trace context; with a provider, records a SERVER span per sampled request."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("ambient-gateway") if provider is not None else None
        if provider is None:
            self._plans: tuple[Plan, Plan, Plan] = (False, False, False)
        else:
            sampler = provider.sampler
            self._plans = (_plan(sampler, True), _plan(sampler, False), _plan(sampler, None))

    def start(self, head: RequestHead) -> Propagation:
        """Read the incoming context and make the outgoing one; start a span if sampled."""
        value = head.get("traceparent")
        if value is not None and len(value) == 55 and _version00(value) is not None:
            # The common case, kept to slices and a concatenation: "00-<trace>-" span "-<flags>".
            plan = self._plans[0] if value[54] in _SAMPLED_DIGITS else self._plans[1]
            if plan is False:
                trace = _new_propagation(Propagation)
                trace.traceparent = value[:36] + getrandbits(64).to_bytes(8).hex() + value[52:]
                return trace
            return self._start_with_parent(head, (value[3:35], value[36:52], value[53:]), plan)
        # Other versions, stray whitespace, or invalid (most requests carry none at all).
        parent = parse_traceparent(value) if value is not None else None
        if parent is not None:
            plan = self._plans[0] if parent[2][1] in _SAMPLED_DIGITS else self._plans[1]
            return self._start_with_parent(head, parent, plan)
        if self._plans[2] is False:
            ids = getrandbits(192).to_bytes(24).hex()
            trace = _new_propagation(Propagation)
            trace.traceparent = f"00-{ids[:32]}-{ids[32:]}-00"
            return trace
        return self._start_span(head, None)

    def _start_with_parent(
        self, head: RequestHead, parent: tuple[str, str, str], plan: Plan
    ) -> Propagation:
        trace_id, _, flags = parent
        if plan is False or (
            plan is not True and plan is not None and (int(trace_id, 16) & _LOW64) >= plan
        ):
            span_id = getrandbits(64).to_bytes(8).hex()
            return Propagation(f"00-{trace_id}-{span_id}-{flags}")
        return self._start_span(head, parent)

    def _start_span(self, head: RequestHead, parent: tuple[str, str, str] | None) -> Propagation:
        tracer = self._tracer
        assert tracer is not None  # plans are all False without a provider
        context: Context | None = None
        if parent is not None:
            tracestate = head.get("tracestate")
            trace_state = TraceState.from_header([tracestate]) if tracestate else None
            remote = SpanContext(
                int(parent[0], 16),
                int(parent[1], 16),
                is_remote=True,
                trace_flags=TraceFlags(int(parent[2], 16)),
                trace_state=trace_state,
            )
            context = otel_trace.set_span_in_context(NonRecordingSpan(remote))
        start_ns = time.time_ns()
        try:
            span = tracer.start_span(
                head.method,
                context=context if context is not None else Context(),
                kind=SpanKind.SERVER,
                start_time=start_ns,
                attributes={"http.request.method": head.method, "url.path": head.path},
            )
        except Exception:
            # A tracing failure must never fail the request: propagate without a span.
            log.exception("starting a span failed")
            trace_id = parent[0] if parent is not None else f"{getrandbits(128) or 1:032x}"
            return Propagation(f"00-{trace_id}-{getrandbits(64).to_bytes(8).hex()}-00")
        sc = span.get_span_context()
        traceparent = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
        if not span.is_recording():
            return Propagation(traceparent)
        return SpanTrace(traceparent, span, start_ns)

    def finish(self, trace: Propagation, record: RequestRecord) -> None:
        """End the request's span (if any) with its outcome and the record's timing."""
        if not isinstance(trace, SpanTrace) or trace.span is None:
            return
        span, trace.span = trace.span, None
        head = record.head
        status = record.status
        attributes: dict[str, Any] = {
            "http.response.status_code": status,
            "url.scheme": head.scheme,
            "server.address": head.host,
            "network.protocol.version": record.version,
            "http.request.body.size": record.request_bytes,
            "http.response.body.size": record.response_bytes,
            "gateway.request_id": record.request_id,
            "gateway.response_flags": record.response_flags,
        }
        peer = head.peer
        if peer is not None:
            # Waypoint mode: the listener "port" is a routing key; the original destination and
            # the HBONE peer's identity say where the request went and who sent it.
            attributes["server.port"] = peer.destination.address[1]
            attributes["istio.source.principal"] = peer.identity.uri
            host, port = peer.destination.address
            attributes["istio.destination.address"] = f"{host}:{port}"
            attributes["istio.reporter"] = "waypoint"
        elif head.listener_port:
            attributes["server.port"] = head.listener_port
        if head.client_ip:
            attributes["network.peer.address"] = head.client_ip
            attributes["client.address"] = head.client_ip
        user_agent = head.get("user-agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        rule = record.rule
        if rule is not None:
            ref = rule.ref
            route = f"{ref.namespace}/{ref.name}"
            attributes["http.route"] = route
            attributes["gateway.route.kind"] = ref.kind
            attributes["gateway.route.namespace"] = ref.namespace
            attributes["gateway.route.name"] = ref.name
            attributes["gateway.route.rule"] = ref.rule_name or str(ref.rule_index)
            span.update_name(f"{head.method} {route}")
        if record.backend is not None:
            attributes["gateway.upstream.service"] = record.backend.destination.host
        if record.endpoint is not None:
            attributes["gateway.upstream.address"] = str(record.endpoint)
        if record.attributes:
            attributes.update(record.attributes)
        span.set_attributes(attributes)
        if record.links:
            _add_links(span, record.links)
        if status >= 500 or status == 0:
            span.set_attribute("error.type", str(status) if status else record.response_flags)
            span.set_status(Status(StatusCode.ERROR))
        if record.end and record.start:
            end_ns = trace.start_ns + int((record.end - record.start) * 1e9)
        else:
            end_ns = time.time_ns()
        span.end(end_time=max(end_ns, trace.start_ns))

    def shutdown(self) -> None:
        """Flush and stop the provider's span processors."""
        if self.provider is not None:
            self.provider.shutdown()


def _add_links(span: Any, links: list[tuple[str, dict[str, Any]]]) -> None:
    """Link ``span`` to each valid traceparent (an invalid one is skipped, never fatal)."""
    for traceparent, attributes in links:
        parent = parse_traceparent(traceparent)
        if parent is None:
            continue
        context = SpanContext(
            int(parent[0], 16),
            int(parent[1], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parent[2], 16)),
        )
        span.add_link(context, attributes)


def provider_from_env(env: Mapping[str, str]) -> TracerProvider | None:
    """An SDK provider from the standard ``OTEL_*`` variables; None when nothing would be exported.

    ``OTEL_SDK_DISABLED=true`` disables it; ``OTEL_TRACES_EXPORTER`` lists ``otlp``, ``console``
    or ``none`` and defaults to ``otlp`` only when an OTLP endpoint is configured (so a gateway
    without a collector does not retry exports forever); ``OTEL_TRACES_SAMPLER`` / ``_ARG`` pick
    the sampler; ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the resource.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    default_exporter = "otlp" if traces_endpoint or base_endpoint else "none"
    names = [
        n.strip().lower()
        for n in env.get("OTEL_TRACES_EXPORTER", default_exporter).split(",")
        if n.strip()
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            if traces_endpoint:
                endpoint: str | None = traces_endpoint
            elif base_endpoint:
                endpoint = base_endpoint.rstrip("/") + "/v1/traces"
            else:
                endpoint = None  # the exporter's own default, http://localhost:4318/v1/traces
            exporters.append(OTLPSpanExporter(endpoint=endpoint))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER %r is not supported (otlp, console, none)", name)
    if not exporters:
        return None
    provider = TracerProvider(sampler=sampler_from_env(env), resource=_resource(env))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _resource(env: Mapping[str, str]) -> Resource:
    """The SDK's detected resource, named by OTEL_SERVICE_NAME or else ``ambient-gateway``."""
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES of the process environment
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if not service and str(resource.attributes.get("service.name", "")).startswith("unknown_"):
        service = "ambient-gateway"
    return resource.merge(Resource({"service.name": service})) if service else resource


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` (default parentbased_always_on) and its arg."""
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name in ("traceidratio", "parentbased_traceidratio"):
        try:
            rate = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            ratio = TraceIdRatioBased(rate)
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG is not a rate in [0, 1]; using 1.0")
            ratio = TraceIdRatioBased(1.0)
        return ParentBased(ratio) if name.startswith("parentbased") else ratio
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
    }
    if name not in samplers:
        log.warning("OTEL_TRACES_SAMPLER %r is not known; using parentbased_always_on", name)
    return samplers.get(name, samplers["parentbased_always_on"])


def build_tracer(env: Mapping[str, str]) -> Tracer:
    """A tracer configured from the standard ``OTEL_*`` variables."""
    return Tracer(provider_from_env(env))
