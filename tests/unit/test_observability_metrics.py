"""The Istio metric store: labels, histogram buckets, exposition text and merging worker states."""

from __future__ import annotations

import json
import pickle

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import (
    DURATION_BUCKETS,
    LABEL_NAMES,
    IstioMetrics,
    merge_states,
    render_states,
)
from tests.fixtures.records import StaticBackend, make_record


def families(text: bytes) -> dict[str, Metric]:
    """Parse exposition text the way a Prometheus client would."""
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def sample_value(family: Metric, suffix: str, **labels: str) -> float:
    """The one sample named ``family.name + suffix`` whose labels include ``labels``."""
    found = [
        s.value
        for s in family.samples
        if s.name == family.name + suffix and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (suffix, labels, found)
    return found[0]


def test_requests_total_counts_per_destination_and_code_with_istio_labels() -> None:
    metrics = IstioMetrics()
    echo = StaticBackend("echo", "apps")
    for _ in range(3):
        metrics.observe(make_record(backend=echo, status=200))
    metrics.observe(make_record(backend=echo, status=503, flags="UH"))

    requests = families(metrics.render())["istio_requests"]
    assert requests.type == "counter"
    ok = [s for s in requests.samples if s.name == "istio_requests_total" and s.value == 3]
    assert len(ok) == 1
    labels = ok[0].labels
    assert set(labels) == set(LABEL_NAMES)
    assert labels["reporter"] == "waypoint"
    assert labels["destination_service"] == "echo.apps.svc.cluster.local"
    assert labels["destination_service_name"] == "echo"
    assert labels["destination_service_namespace"] == "apps"
    assert labels["response_code"] == "200"
    assert labels["response_flags"] == "-"
    assert labels["request_protocol"] == "http"
    assert labels["source_workload"] == "unknown"
    assert sample_value(requests, "_total", response_code="503", response_flags="UH") == 1


def test_duration_histogram_buckets_sum_and_count() -> None:
    metrics = IstioMetrics()
    echo = StaticBackend()
    for ms in (0.2, 3.0, 3.0, 700.0):
        metrics.observe(make_record(backend=echo, duration_ms=ms))

    duration = families(metrics.render())["istio_request_duration_milliseconds"]
    assert duration.type == "histogram"
    buckets = {
        float(s.labels["le"]): s.value for s in duration.samples if s.name.endswith("_bucket")
    }
    assert sorted(buckets) == [*DURATION_BUCKETS, float("inf")]
    assert buckets[0.5] == 1
    assert buckets[1] == 1
    assert buckets[5] == 3
    assert buckets[500] == 3
    assert buckets[1000] == 4
    assert buckets[float("inf")] == 4
    assert sample_value(duration, "_count") == 4
    assert abs(sample_value(duration, "_sum") - 706.2) < 1e-6


def test_byte_histograms_use_body_sizes() -> None:
    metrics = IstioMetrics()
    metrics.observe(make_record(backend=StaticBackend(), request_bytes=0, response_bytes=1024))
    metrics.observe(make_record(backend=StaticBackend(), request_bytes=50, response_bytes=10))

    parsed = families(metrics.render())
    request = parsed["istio_request_bytes"]
    response = parsed["istio_response_bytes"]
    assert sample_value(request, "_bucket", le="1.0") == 1
    assert sample_value(request, "_bucket", le="100.0") == 2
    assert sample_value(request, "_sum") == 50
    assert sample_value(response, "_bucket", le="10.0") == 1
    assert sample_value(response, "_bucket", le="1000.0") == 1
    assert sample_value(response, "_bucket", le="10000.0") == 2
    assert sample_value(response, "_sum") == 1034


def test_no_route_is_reported_with_unknown_destination_and_its_flag() -> None:
    metrics = IstioMetrics()
    metrics.observe(make_record(status=404, route=None, flags="NR"))

    requests = families(metrics.render())["istio_requests"]
    sample = next(s for s in requests.samples if s.name == "istio_requests_total")
    assert sample.labels["destination_service"] == "unknown"
    assert sample.labels["response_code"] == "404"
    assert sample.labels["response_flags"] == "NR"


def test_parse_rejections_count_as_bad_requests() -> None:
    metrics = IstioMetrics()
    metrics.observe(make_record(status=400, route=None))
    metrics.observe(make_record(status=431, route=None))
    metrics.observe(make_record(status=400, route=None))
    metrics.observe(make_record(status=400, backend=StaticBackend()))  # a routed 400 is not one

    bad = families(metrics.render())["ambient_gateway_bad_requests"]
    assert sample_value(bad, "_total", response_code="400") == 2
    assert sample_value(bad, "_total", response_code="431") == 1


def test_downstream_connection_counters() -> None:
    metrics = IstioMetrics()
    for _ in range(3):
        metrics.connection_opened(8080)
    metrics.connection_opened(8443)
    metrics.connection_closed(8080)

    parsed = families(metrics.render())
    accepted = parsed["ambient_gateway_downstream_connections"]
    active = parsed["ambient_gateway_downstream_connections_active"]
    assert sample_value(accepted, "_total", listener_port="8080") == 3
    assert sample_value(accepted, "_total", listener_port="8443") == 1
    assert sample_value(active, "", listener_port="8080") == 2
    assert sample_value(active, "", listener_port="8443") == 1


def test_same_labels_from_a_reloaded_backend_object_share_one_series() -> None:
    metrics = IstioMetrics()
    metrics.observe(make_record(backend=StaticBackend()))
    metrics.observe(make_record(backend=StaticBackend()))  # new object, same destination

    requests = families(metrics.render())["istio_requests"]
    totals = [s.value for s in requests.samples if s.name == "istio_requests_total"]
    assert totals == [2]


def test_exported_state_is_json_and_pickle_safe_and_merges_by_adding() -> None:
    worker_a, worker_b = IstioMetrics(), IstioMetrics()
    echo, other = StaticBackend("echo"), StaticBackend("other")
    for _ in range(5):
        worker_a.observe(make_record(backend=echo, duration_ms=2.0))
    for _ in range(7):
        worker_b.observe(make_record(backend=echo, duration_ms=20.0))
    worker_b.observe(make_record(backend=other, status=500))
    worker_a.observe(make_record(status=400, route=None))
    worker_b.observe(make_record(status=400, route=None))

    state_a = json.loads(json.dumps(worker_a.export_state()))
    state_b = pickle.loads(pickle.dumps(worker_b.export_state()))
    parsed = families(render_states([state_a, state_b]))

    requests = parsed["istio_requests"]
    assert sample_value(requests, "_total", destination_service_name="echo") == 12
    assert sample_value(requests, "_total", destination_service_name="other") == 1
    duration = parsed["istio_request_duration_milliseconds"]
    echo_only = {"destination_service_name": "echo"}
    assert sample_value(duration, "_count", **echo_only) == 12
    assert sample_value(duration, "_bucket", le="5.0", **echo_only) == 5
    assert sample_value(duration, "_bucket", le="25.0", **echo_only) == 12
    assert abs(sample_value(duration, "_sum", **echo_only) - 150.0) < 1e-6
    assert sample_value(parsed["ambient_gateway_bad_requests"], "_total") == 2
    merged = merge_states([state_a, state_b])
    assert merged["version"] == state_a["version"]
    assert sum(item[1] for item in merged["series"]) == 15  # with the two unrouted 400s


def test_upstream_connect_failures_render_and_merge_across_workers() -> None:
    worker_a, worker_b = IstioMetrics(), IstioMetrics()
    echo = StaticBackend("echo", "apps").destination
    worker_a.upstream_connect_failure(echo, "tls_verify")
    worker_b.upstream_connect_failure(echo, "tls_verify")
    worker_b.upstream_connect_failure(echo, "connect_refused")
    state_a = json.loads(json.dumps(worker_a.export_state()))
    state_b = pickle.loads(pickle.dumps(worker_b.export_state()))
    family = families(render_states([state_a, state_b]))[
        "ambient_gateway_upstream_connect_failures"
    ]
    labels = {"destination_service_name": "echo", "destination_service_namespace": "apps"}
    assert sample_value(family, "_total", reason="tls_verify", **labels) == 2
    assert sample_value(family, "_total", reason="connect_refused", **labels) == 1
    merged = merge_states([state_a, state_b])
    assert sorted(merged["upstream_connect_failures"]) == [
        ["echo", "apps", "connect_refused", 1],
        ["echo", "apps", "tls_verify", 2],
    ]
    # A state from before the counter existed still merges.
    del state_a["upstream_connect_failures"]
    assert merge_states([state_a])["upstream_connect_failures"] == []
