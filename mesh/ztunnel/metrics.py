"""Istio's L4 TCP metrics with the standard label set, one registry per ztunnel instance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mesh.state.registry import Service, Workload

LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
UNKNOWN = "unknown"
CLUSTER = "Kubernetes"


def _canonical(w: Workload | None) -> tuple[str, str]:
    if w is None:
        return UNKNOWN, UNKNOWN
    labels = w.labels
    name = (
        labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or w.name
    )
    rev = (
        labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )
    return name, rev


@dataclass(frozen=True, slots=True)
class ConnectionLabels:
    """Who talked to whom, rendered into Istio's label values."""

    reporter: str
    source: Workload | None
    source_principal: str | None
    destination: Workload | None
    service: Service | None
    secure: bool

    def values(self, response_flags: str = "-") -> dict[str, str]:
        """Label values, ``unknown`` where a fact is missing."""
        src_name, src_rev = _canonical(self.source)
        dst_name, dst_rev = _canonical(self.destination)
        svc = self.service
        dst_principal = self.destination.identity.uri if self.destination else UNKNOWN
        return {
            "reporter": self.reporter,
            "source_workload": self.source.name if self.source else UNKNOWN,
            "source_canonical_service": src_name,
            "source_canonical_revision": src_rev,
            "source_workload_namespace": self.source.namespace if self.source else UNKNOWN,
            "source_principal": self.source_principal or UNKNOWN,
            "source_app": src_name,
            "source_version": src_rev,
            "source_cluster": CLUSTER if self.source else UNKNOWN,
            "destination_service": svc.hostname if svc else UNKNOWN,
            "destination_service_namespace": svc.namespace if svc else UNKNOWN,
            "destination_service_name": svc.name if svc else UNKNOWN,
            "destination_workload": self.destination.name if self.destination else UNKNOWN,
            "destination_canonical_service": dst_name,
            "destination_canonical_revision": dst_rev,
            "destination_workload_namespace": (
                self.destination.namespace if self.destination else UNKNOWN
            ),
            "destination_principal": dst_principal if self.secure else UNKNOWN,
            "destination_app": dst_name,
            "destination_version": dst_rev,
            "destination_cluster": CLUSTER if self.destination else UNKNOWN,
            "request_protocol": "tcp",
            "response_flags": response_flags,
            "connection_security_policy": "mutual_tls" if self.secure else "unknown",
        }


class CounterFamily:
    """A labelled counter (or gauge) kept as a dict: small, no registry, no global state."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], kind: str = "counter"):
        self.name = name
        self.help = help_text
        self.labels = labels
        self.kind = kind
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, values: Mapping[str, str], amount: float = 1.0) -> None:
        """Add ``amount`` to the series with these label values."""
        key = tuple(values[label] for label in self.labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    @property
    def sample_name(self) -> str:
        """Counters expose ``<name>_total`` samples."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def render(self, openmetrics: bool) -> list[str]:
        """Exposition lines for this family."""
        family = self.name if openmetrics or self.kind != "counter" else self.sample_name
        lines = [f"# HELP {family} {self.help}", f"# TYPE {family} {self.kind}"]
        for key, value in sorted(self.values.items()):
            labels = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            lines.append(f"{self.sample_name}{{{labels}}} {_number(value)}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class TcpMetrics:
    """The istio_tcp_* counters (opened, closed, bytes both ways, failed) and open sockets."""

    def __init__(self) -> None:
        self.opened = CounterFamily("istio_tcp_connections_opened", "Connections opened", LABELS)
        self.closed = CounterFamily("istio_tcp_connections_closed", "Connections closed", LABELS)
        self.sent = CounterFamily(
            "istio_tcp_sent_bytes", "Bytes sent upstream to downstream", LABELS
        )
        self.received = CounterFamily(
            "istio_tcp_received_bytes", "Bytes received downstream to upstream", LABELS
        )
        self.failed_connections = CounterFamily(
            "istio_tcp_connections_failed", "Connections refused before a tunnel existed", LABELS
        )
        self.sockets = CounterFamily(
            "istio_tcp_sockets_open", "Open proxied sockets", ("reporter",), "gauge"
        )
        self.families = (
            self.opened,
            self.closed,
            self.received,
            self.sent,
            self.failed_connections,
            self.sockets,
        )

    def open(self, labels: ConnectionLabels) -> None:
        """Count a connection as opened."""
        self.opened.add(labels.values())
        self.sockets.add({"reporter": labels.reporter})

    def close(self, labels: ConnectionLabels, received: int, sent: int, flags: str = "-") -> None:
        """Count a connection as closed with its byte totals (exactly once per open)."""
        values = labels.values(flags)
        self.closed.add(values)
        if received:
            self.received.add(values, received)
        if sent:
            self.sent.add(values, sent)
        self.sockets.add({"reporter": labels.reporter}, -1)

    def failed(self, labels: ConnectionLabels, flags: str) -> None:
        """Count a connection refused before it was opened (e.g. ``TLS_FAILURE``)."""
        self.failed_connections.add(labels.values(flags))

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Exposition body and content type (OpenMetrics when the client asks for it)."""
        openmetrics = "application/openmetrics-text" in accept
        lines = [line for family in self.families for line in family.render(openmetrics)]
        if openmetrics:
            lines.append("# EOF")
            ctype = "application/openmetrics-text;charset=utf-8;version=1.0.0"
        else:
            ctype = "text/plain; charset=utf-8"
        return ("\n".join(lines) + "\n").encode(), ctype


def sample(metrics: TcpMetrics, name: str, match: Mapping[str, str]) -> float:
    """Sum of a metric's series whose labels include ``match`` (for tests and the bench)."""
    total = 0.0
    for family in metrics.families:
        if family.sample_name != name:
            continue
        for key, value in family.values.items():
            labels = dict(zip(family.labels, key, strict=True))
            if all(labels.get(k) == v for k, v in match.items()):
                total += value
    return total
