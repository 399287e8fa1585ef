"""Metrics exposition: Istio names and labels, parseable as Prometheus text and OpenMetrics."""

from __future__ import annotations

import pytest

from mesh.identity import SpiffeId
from mesh.state.registry import Workload
from mesh.ztunnel.metrics import LABELS, ConnectionLabels, TcpMetrics, sample


def workload(name: str) -> Workload:
    return Workload(
        name, "default", name, "n", "10.0.0.1", {"app": name, "version": "v1"}, True,
        SpiffeId("cluster.local", "default", name),
    )  # fmt: skip


def test_counters_and_labels() -> None:
    m = TcpMetrics()
    labels = ConnectionLabels("source", workload("a"), "spiffe://cluster.local/ns/default/sa/a",
                              workload("b"), None, True)  # fmt: skip
    m.open(labels)
    m.close(labels, received=10, sent=20, flags="-")
    values = labels.values()
    assert tuple(values) == LABELS
    assert values["source_app"] == "a" and values["source_version"] == "v1"
    assert values["destination_service"] == "unknown"
    assert values["connection_security_policy"] == "mutual_tls"
    assert sample(m, "istio_tcp_connections_opened_total", {"reporter": "source"}) == 1
    assert sample(m, "istio_tcp_received_bytes_total", {}) == 10
    assert sample(m, "istio_tcp_sent_bytes_total", {}) == 20
    assert sample(m, "istio_tcp_sockets_open", {"reporter": "source"}) == 0


def test_exposition_parses() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    om_parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    m = TcpMetrics()
    labels = ConnectionLabels("destination", None, 'we"ird\\id', workload("b"), None, False)
    m.open(labels)
    m.close(labels, 5, 7, "DENY")
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    opened = families["istio_tcp_connections_opened"]
    (s,) = opened.samples
    assert s.labels["source_principal"] == 'we"ird\\id' and s.value == 1
    body, ctype = m.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    om = {f.name: f for f in om_parser.text_string_to_metric_families(body.decode())}
    closed = om["istio_tcp_connections_closed"]
    assert closed.samples[0].labels["response_flags"] == "DENY"
