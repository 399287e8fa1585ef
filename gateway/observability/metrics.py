"""Istio-named RED metrics for the waypoint, accumulated in plain lists and rendered at scrape time.

``prometheus_client``'s ``Counter.labels(...).inc()`` costs microseconds per call, which is a big
share of a ~25 µs per-request budget. So :class:`IstioMetrics` caches one :class:`Series` per
(destination, status, flags, protocol, gRPC status) and bumps plain counters and bucket lists; the
Prometheus text is produced only when scraped, by a custom collector over an exported state.
States of several worker processes merge by adding up (:func:`merge_states`, :func:`render_states`).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from gateway.backends.base import Destination, Endpoint
    from gateway.observability.record import RequestRecord
    from gateway.waypoint.peer import MeshPeer

DURATION_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
"""Istio's buckets for ``istio_request_duration_milliseconds``."""

BYTE_BUCKETS: tuple[float, ...] = (1, 10, 100, 1000, 10000, 100000, 1e6, 1e7, 1e8)
"""Istio's buckets for ``istio_request_bytes`` / ``istio_response_bytes``."""

LABEL_NAMES: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
"""Istio's standard labels, in exposition order."""

# The same bounds typed like the values bisected against them (float durations, int byte counts):
# comparisons of mixed int/float take CPython's slow path, same-type ones a fast one.
_DURATION_BOUNDS: tuple[float, ...] = tuple(float(b) for b in DURATION_BUCKETS)
_BYTE_BOUNDS: tuple[int, ...] = tuple(int(b) for b in BYTE_BUCKETS)

STATE_VERSION = 1
# Layout of one exported series: labels, request count, three sums, three bucket-count lists.
LABELS, COUNT, DURATION_SUM, REQUEST_SUM, RESPONSE_SUM = 0, 1, 2, 3, 4
DURATION_COUNTS, REQUEST_COUNTS, RESPONSE_COUNTS = 5, 6, 7
UNKNOWN = "unknown"
# Bound on the per-object label cache: every reload brings new Destination objects, so an
# unbounded cache keyed on identity would grow with reloads. Clearing it only costs re-resolving.
_CACHE_LIMIT = 4096


class Series:
    """Accumulated values for one label set: a request count and three histograms."""

    __slots__ = ("count", "duration_buckets", "duration_sum", "labels", "request_buckets",
                 "request_sum", "response_buckets", "response_sum")  # fmt: skip

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.count = 0
        self.duration_sum = 0.0
        self.request_sum = 0.0
        self.response_sum = 0.0
        # Non-cumulative counts, one slot per bound plus a final +Inf slot.
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.request_buckets = [0] * (len(BYTE_BUCKETS) + 1)
        self.response_buckets = [0] * (len(BYTE_BUCKETS) + 1)

    def to_state(self) -> list[Any]:
        """A JSON-able copy: ``[labels, count, sums..., buckets...]``."""
        return [
            list(self.labels),
            self.count,
            self.duration_sum,
            self.request_sum,
            self.response_sum,
            list(self.duration_buckets),
            list(self.request_buckets),
            list(self.response_buckets),
        ]


class IstioMetrics:
    """The per-process metric store the data path writes into through :meth:`observe`."""

    def __init__(self, *, reporter: str = "waypoint", cluster: str = UNKNOWN) -> None:
        self.reporter = reporter
        self.cluster = cluster
        self._series: dict[tuple[str, ...], Series] = {}
        # (id(destination), status, flags, protocol, grpc status) -> (destination kept alive,
        # series)
        self._cache: dict[tuple[int, int, str, str, str], tuple[object, Series]] = {}
        # (destination, status, flags, protocol, grpc status, series) of the previous request,
        # checked first.
        self._last: tuple[object, int, str, str, str, Series] | None = None
        # Waypoint mode: (id(peer), id(destination), endpoint address, status, flags, protocol,
        # grpc status) -> (peer and destination kept alive, series).
        self._mesh_cache: dict[tuple[Any, ...], tuple[object, object, Series]] = {}
        self._bad_requests: dict[str, int] = {}
        self._refused: dict[str, int] = {}
        # (destination service name, namespace, reason) -> failed dials
        self._connect_failures: dict[tuple[str, str, str], int] = {}
        # listener port -> downstream connections accepted / closed on it
        self._connections_opened: dict[int, int] = {}
        self._connections_closed: dict[int, int] = {}

    def observe(self, record: RequestRecord) -> None:
        """Account one finished request (hot path: a dict lookup and a few list increments)."""
        backend = record.backend
        dest = backend.destination if backend is not None else None
        status = record.status
        flags = record.response_flags
        protocol = record.protocol
        grpc_status = record.grpc_status
        peer = record.head.peer
        last = self._last
        if peer is not None:
            series = self._mesh_series(record, peer, dest, status, flags, protocol, grpc_status)
        elif (
            last is not None
            and last[0] is dest
            and last[1] == status
            and last[2] == flags
            and last[3] == protocol
            and last[4] == grpc_status
        ):
            series = last[5]  # the same outcome as the previous request: no key to build
        else:
            key = (id(dest), status, flags, protocol, grpc_status)
            hit = self._cache.get(key)
            if hit is None or hit[0] is not dest:
                series = self._resolve(key, dest, status, flags, protocol, grpc_status)
            else:
                series = hit[1]
            self._last = (dest, status, flags, protocol, grpc_status, series)
        end = record.end or time.perf_counter()
        ms = (end - record.start) * 1000.0
        req = record.request_bytes
        resp = record.response_bytes
        series.count += 1
        series.duration_sum += ms
        series.request_sum += req
        series.response_sum += resp
        series.duration_buckets[bisect_left(_DURATION_BOUNDS, ms)] += 1
        # Most requests (GETs) carry no body: bucket 0 without a bisect.
        series.request_buckets[bisect_left(_BYTE_BOUNDS, req) if req else 0] += 1
        series.response_buckets[bisect_left(_BYTE_BOUNDS, resp)] += 1
        if record.rule is None and (status == 400 or status == 431):
            code = str(status)
            self._bad_requests[code] = self._bad_requests.get(code, 0) + 1

    def _mesh_series(
        self,
        record: RequestRecord,
        peer: MeshPeer,
        dest: Destination | None,
        status: int,
        flags: str,
        protocol: str,
        grpc_status: str,
    ) -> Series:
        """The series of a request that came over the mesh: source and destination workloads and
        principals filled in from the identities."""
        endpoint = record.endpoint
        address = endpoint.address if endpoint is not None else ""
        key = (id(peer), id(dest), address, status, flags, protocol, grpc_status)
        hit = self._mesh_cache.get(key)
        if hit is not None and hit[0] is peer and hit[1] is dest:
            return hit[2]
        labels = self.mesh_labels(peer, dest, endpoint, status, flags, protocol, grpc_status)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = Series(labels)
        if len(self._mesh_cache) >= _CACHE_LIMIT:
            self._mesh_cache.clear()
        self._mesh_cache[key] = (peer, dest, series)
        return series

    def mesh_labels(
        self,
        peer: MeshPeer,
        dest: Destination | None,
        endpoint: Endpoint | None,
        status: int,
        flags: str,
        protocol: str,
        grpc_status: str = "",
    ) -> tuple[str, ...]:
        """Istio's labels for a waypoint request: :meth:`labels_for` plus the identities."""
        values = dict(
            zip(
                LABEL_NAMES,
                self.labels_for(dest, status, flags, protocol, grpc_status),
                strict=True,
            )
        )
        u = UNKNOWN
        source = peer.source
        values.update(
            source_workload=source.name if source else u,
            source_workload_namespace=peer.identity.namespace,
            source_principal=peer.identity.uri,
            source_app=source.labels.get("app", u) if source else u,
            source_version=source.labels.get("version", u) if source else u,
            source_canonical_service=source.labels.get("app", source.name) if source else u,
            source_canonical_revision=source.labels.get("version", "latest") if source else u,
            connection_security_policy="mutual_tls",
        )
        service = peer.destination.service
        if dest is None and service is not None:
            values.update(
                destination_service=service.hostname,
                destination_service_name=service.name,
                destination_service_namespace=service.namespace,
            )
        target = peer.state.workload_by_ip(endpoint.address) if endpoint is not None else None
        if target is not None:
            values.update(
                destination_workload=target.name,
                destination_workload_namespace=target.namespace,
                destination_principal=target.identity.uri,
                destination_app=target.labels.get("app", u),
                destination_version=target.labels.get("version", u),
                destination_canonical_service=target.labels.get("app", target.name),
                destination_canonical_revision=target.labels.get("version", "latest"),
            )
        return tuple(values[name] for name in LABEL_NAMES)

    def refused(self, reason: str) -> None:
        """Count a connection refused before any request (TLS handshake, HTTP/2 abuse)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1

    def upstream_connect_failure(self, dest: Destination | None, reason: str) -> None:
        """Count a failed upstream dial (called only when one fails, never per request)."""
        key = (dest.service_name, dest.namespace, reason) if dest else (UNKNOWN, UNKNOWN, reason)
        self._connect_failures[key] = self._connect_failures.get(key, 0) + 1

    def connection_opened(self, port: int) -> None:
        """Count a downstream connection accepted on listener ``port`` (once per connection)."""
        self._connections_opened[port] = self._connections_opened.get(port, 0) + 1

    def connection_closed(self, port: int) -> None:
        """Count a downstream connection of listener ``port`` that closed."""
        self._connections_closed[port] = self._connections_closed.get(port, 0) + 1

    def _resolve(
        self,
        key: tuple[int, int, str, str, str],
        dest: Destination | None,
        status: int,
        flags: str,
        protocol: str,
        grpc_status: str,
    ) -> Series:
        labels = self.labels_for(dest, status, flags, protocol, grpc_status)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = Series(labels)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (dest, series)
        return series

    def labels_for(
        self,
        dest: Destination | None,
        status: int,
        flags: str,
        protocol: str,
        grpc_status: str = "",
    ) -> tuple[str, ...]:
        """Istio's label values for a destination and outcome, ``unknown`` where we cannot know."""
        u = UNKNOWN
        if dest is None:
            d_host = d_name = d_ns = d_canonical = d_revision = u
        else:
            d_host, d_name, d_ns = dest.host, dest.service_name, dest.namespace
            # Istio falls back to the workload/service name and "latest" without pod labels.
            d_canonical, d_revision = dest.service_name, "latest"
        if protocol == "grpc" and not grpc_status:
            grpc_status = u
        return (
            self.reporter,
            u, u, u, u, u, u, u, u,  # source_*: a waypoint without mesh identity cannot know
            u, d_ns, u, u, u,  # destination workload, workload namespace, principal, app, version
            d_host, d_name, d_ns, d_canonical, d_revision, self.cluster,
            protocol, str(status), grpc_status, flags or "-", u,
        )  # fmt: skip

    def export_state(self) -> dict[str, Any]:
        """A JSON-able, picklable copy of everything counted so far, for merging across workers."""
        return {
            "version": STATE_VERSION,
            "series": [s.to_state() for s in self._series.values()],
            "bad_requests": dict(self._bad_requests),
            "refused": dict(self._refused),
            "upstream_connect_failures": [[*k, n] for k, n in self._connect_failures.items()],
            "connections_opened": [[port, n] for port, n in self._connections_opened.items()],
            "connections_closed": [[port, n] for port, n in self._connections_closed.items()],
            "sources": export_sources(),
        }

    def render(self) -> bytes:
        """This process's metrics as Prometheus text."""
        return render_states([self.export_state()])


def merge_states(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add several exported states (one per worker) into one state of the same shape."""
    series: dict[tuple[str, ...], list[Any]] = {}
    bad: dict[str, int] = {}
    refused: dict[str, int] = {}
    failures: dict[tuple[str, str, str], int] = {}
    opened: dict[int, int] = {}
    closed: dict[int, int] = {}
    for state in states:
        if state.get("version") != STATE_VERSION:
            version = state.get("version")
            raise ValueError(f"metrics state version {version!r} is not {STATE_VERSION}")
        for item in state["series"]:
            labels = tuple(item[0])
            acc = series.get(labels)
            if acc is None:
                acc = series[labels] = [list(labels), 0, 0.0, 0.0, 0.0, None, None, None]
            for i in (COUNT, DURATION_SUM, REQUEST_SUM, RESPONSE_SUM):
                acc[i] += item[i]
            for i in (DURATION_COUNTS, REQUEST_COUNTS, RESPONSE_COUNTS):
                mine = acc[i]
                acc[i] = (
                    list(item[i])
                    if mine is None
                    else [a + b for a, b in zip(mine, item[i], strict=True)]
                )
        for code, n in state["bad_requests"].items():
            bad[code] = bad.get(code, 0) + n
        for reason, n in state.get("refused", {}).items():
            refused[reason] = refused.get(reason, 0) + n
        for name, namespace, reason, n in state.get("upstream_connect_failures", ()):
            key = (name, namespace, reason)
            failures[key] = failures.get(key, 0) + n
        for port, n in state["connections_opened"]:
            opened[port] = opened.get(port, 0) + n
        for port, n in state["connections_closed"]:
            closed[port] = closed.get(port, 0) + n
    return {
        "version": STATE_VERSION,
        "series": list(series.values()),
        "bad_requests": bad,
        "refused": refused,
        "upstream_connect_failures": [[*k, n] for k, n in failures.items()],
        "connections_opened": [[port, n] for port, n in opened.items()],
        "connections_closed": [[port, n] for port, n in closed.items()],
    }


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], series: list[list[Any]], counts: int, sums: int
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=LABEL_NAMES)
    for item in series:
        running, buckets = 0, []
        for bound, n in zip((*bounds, float("inf")), item[counts], strict=True):
            running += n
            buckets.append((floatToGoString(bound), running))
        family.add_metric(item[LABELS], buckets, sum_value=item[sums])
    return family


class StateCollector(Collector):
    """A prometheus_client collector that renders the merge of states given by ``source``."""

    def __init__(self, source: Iterable[Mapping[str, Any]] | None = None) -> None:
        self._states = list(source or ())

    def collect(self) -> Iterator[Metric]:
        """Yield the Istio families and the gateway's own counters."""
        state = merge_states(self._states)
        series = state["series"]
        requests = CounterMetricFamily(
            "istio_requests", "Requests handled by the waypoint.", labels=LABEL_NAMES
        )
        for item in series:
            requests.add_metric(item[LABELS], item[COUNT])
        yield requests
        yield _histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            DURATION_BUCKETS, series, DURATION_COUNTS, DURATION_SUM,
        )  # fmt: skip
        yield _histogram(
            "istio_request_bytes", "Request body size in bytes.",
            BYTE_BUCKETS, series, REQUEST_COUNTS, REQUEST_SUM,
        )  # fmt: skip
        yield _histogram(
            "istio_response_bytes", "Response body size in bytes.",
            BYTE_BUCKETS, series, RESPONSE_COUNTS, RESPONSE_SUM,
        )  # fmt: skip
        bad = CounterMetricFamily(
            "ambient_gateway_bad_requests",
            "Requests rejected while parsing (400 malformed or smuggling, 431 headers too large).",
            labels=("response_code",),
        )
        for code, n in sorted(state["bad_requests"].items()):
            bad.add_metric((code,), n)
        yield bad
        refusals = CounterMetricFamily(
            "ambient_gateway_refused_connections",
            "Connections refused: TLS handshake failures (tls_handshake), HTTP/2 connections "
            "told to calm down (h2_flood) or closed for a protocol error (h2_protocol_error).",
            labels=("reason",),
        )
        for reason, n in sorted(state.get("refused", {}).items()):
            refusals.add_metric((reason,), n)
        yield refusals
        failures = CounterMetricFamily(
            "ambient_gateway_upstream_connect_failures",
            "Failed upstream dials by reason: tls_verify, tls_handshake, connect_refused, "
            "connect_timeout, connect_error.",
            labels=("destination_service_name", "destination_service_namespace", "reason"),
        )
        for name, namespace, reason, n in sorted(state.get("upstream_connect_failures", ())):
            failures.add_metric((name, namespace, reason), n)
        yield failures
        opened = dict(state["connections_opened"])
        closed = dict(state["connections_closed"])
        accepted = CounterMetricFamily(
            "ambient_gateway_downstream_connections",
            "Downstream connections accepted, per listener port (HTTP/1.1, HTTP/2, TLS).",
            labels=("listener_port",),
        )
        active = GaugeMetricFamily(
            "ambient_gateway_downstream_connections_active",
            "Downstream connections currently open, per listener port.",
            labels=("listener_port",),
        )
        for port in sorted(opened):
            accepted.add_metric((str(port),), opened[port])
            active.add_metric((str(port),), opened[port] - closed.get(port, 0))
        yield accepted
        yield active


class MetricsSource(Protocol):
    """Metrics a plugin keeps in each serving process, rendered on the gateway's ``/metrics``.

    Like the gateway's own, they are kept as a state per process and rendered from the states of
    every worker (``--workers N``): the source decides how values of several workers combine.
    """

    def export_state(self) -> Any:
        """This process's values, JSON-able and picklable."""
        ...

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        """The metric families for the states of every worker (one state per worker)."""
        ...


_SOURCES: dict[str, MetricsSource] = {}


def register_metrics_source(name: str, source: MetricsSource) -> None:
    """Render ``source`` on ``/metrics``; raises ValueError if ``name`` is taken."""
    if name in _SOURCES:
        raise ValueError(f"metrics source {name!r} is already registered")
    _SOURCES[name] = source


def replace_metrics_source(name: str, source: MetricsSource) -> None:
    """Render ``source`` on ``/metrics`` as ``name``, instead of what was there."""
    _SOURCES[name] = source


def export_sources() -> dict[str, Any]:
    """Each registered source's state in this process, by name."""
    return {name: source.export_state() for name, source in _SOURCES.items()}


class _SourcesCollector(Collector):
    """The families of every registered source, from the workers' states."""

    def __init__(self, states: list[Mapping[str, Any]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        for name, source in _SOURCES.items():
            theirs = [s["sources"][name] for s in self._states if name in s.get("sources", {})]
            yield from source.collect(theirs)


def render_states(states: Iterable[Mapping[str, Any]], extra: Iterable[Collector] = ()) -> bytes:
    """Prometheus text for the merge of ``states`` (and the plugin sources' parts of them), plus
    any ``extra`` collectors (e.g. process)."""
    states = list(states)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(states))
    if _SOURCES:
        registry.register(_SourcesCollector(states))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)
