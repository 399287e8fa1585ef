"""Pools as compile sees them: endpoints from Pods, both API versions, status conditions, the
picker's settings, body-based routing's table, and the errors bad YAML gets (named, nothing else
broken). No sockets: the compiled snapshot is inspected."""

from __future__ import annotations

import pytest

from gateway.compile import compile_snapshot
from gateway.config import ConfigError, load_text
from gateway.snapshot import Snapshot
from inference_ext.bbr import BodyBasedRoutingStage
from inference_ext.pool import InferencePoolBackend, Pools
from tests.fixtures.inference import (
    gateway_doc,
    objective_doc,
    picker_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    route_doc,
)
from tests.fixtures.route_config import head, match

ROUTE = route_doc(f"  - backendRefs: [{pool_ref('llama', port=1234)}]\n")


def compile_text(text: str) -> Snapshot:
    return compile_snapshot(load_text(text, "pool.yaml"), 1)


def backend_of(snapshot: Snapshot) -> InferencePoolBackend:
    rule = match(snapshot, head("/v1/chat/completions", method="POST"))
    assert rule is not None
    backend = rule.choices[0].backend
    assert isinstance(backend, InferencePoolBackend)
    return backend


def conditions(snapshot: Snapshot, kind: str, name: str) -> dict[str, tuple[str, str]]:
    (status,) = [s for s in snapshot.statuses if (s.kind, s.name) == (kind, name)]
    return {c.type: (c.status, c.reason) for p in status.parents for c in p.conditions}


def test_endpoints_are_the_ready_selected_pods_times_the_target_ports(
    pools: Pools,  # noqa: F811
) -> None:
    text = (
        gateway_doc(80)
        + pod_docs("llama", ["10.0.0.1", "10.0.0.2"])
        + pod_docs("llama", ["10.0.0.3"], ready=False, prefix="starting")
        + pod_docs("other", ["10.0.0.4"])
        + pool_doc("llama", "llama", [8000, 8001])
        + objective_doc("chat", "llama", 5)
        + objective_doc("elsewhere", "another-pool", 9)
        + ROUTE
    )
    snapshot = compile_text(text)
    backend = backend_of(snapshot)
    assert sorted(backend.scheduler.view.endpoints) == [
        "10.0.0.1:8000",
        "10.0.0.1:8001",
        "10.0.0.2:8000",
        "10.0.0.2:8001",
    ]  # backendRef.port (1234) is ignored, as the spec says
    assert backend.objectives == {"chat": 5}
    assert conditions(snapshot, "InferencePool", "llama") == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    (dumped,) = snapshot.dump["inference"]["pools"]
    assert dumped["parents"] == ["default/gw"] and dumped["endpointPicker"] == "in-process"


def test_the_v1alpha2_shape_is_the_same_pool(pools: Pools) -> None:  # noqa: F811
    alpha = """
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferencePool
metadata: {name: llama, namespace: default}
spec:
  selector: {app: llama}
  targetPortNumber: 8000
"""
    route = route_doc(
        "  - backendRefs: [{group: inference.networking.x-k8s.io, kind: InferencePool, "
        "name: llama}]\n"
    )
    base = gateway_doc(80) + pod_docs("llama", ["10.0.0.1"]) + route
    backend = backend_of(compile_text(base + alpha))
    assert list(backend.scheduler.view.endpoints) == ["10.0.0.1:8000"]
    assert backend.spec.version == "v1alpha2"
    # Its extensionRef names a Service that does not exist: the pool and the route say so.
    missing = alpha + "  extensionRef: {name: llama-epp, failureMode: FailOpen}\n"
    snapshot = compile_text(base + missing)
    assert conditions(snapshot, "InferencePool", "llama")["ResolvedRefs"] == (
        "False",
        "InvalidExtensionRef",
    )
    assert conditions(snapshot, "HTTPRoute", "llm")["ResolvedRefs"] == ("False", "BackendNotFound")


def test_a_pool_no_route_references_has_no_parents(pools: Pools) -> None:  # noqa: F811
    snapshot = compile_text(
        gateway_doc(80) + pod_docs("llama", ["10.0.0.1"]) + pool_doc("llama", "llama", [8000])
    )
    (status,) = [s for s in snapshot.statuses if s.kind == "InferencePool"]
    assert status.parents == ()


def test_a_route_to_a_missing_pool_is_not_resolved(pools: Pools) -> None:  # noqa: F811
    snapshot = compile_text(gateway_doc(80) + ROUTE)
    assert conditions(snapshot, "HTTPRoute", "llm")["ResolvedRefs"] == (
        "False",
        "BackendNotFound",
    )


def test_the_endpoint_picker_resource_sets_the_schedulers_settings(
    pools: Pools,  # noqa: F811
) -> None:
    extra = picker_doc(
        "llama",
        engine="sglang",
        scrapeInterval="200ms",
        scorers="{queue: 1, prefixCache: 0}",
        saturation="{queueDepthThreshold: 8}",
        flowControl="{maxQueued: 10, queueTTL: 2s}",
        prefixCache="{blockSizeTokens: 16, maxPrefixBlocks: 512}",
    )
    text = gateway_doc(80) + pod_docs("llama", ["10.0.0.1"]) + pool_doc("llama", "llama", [80])
    config = backend_of(compile_text(text + extra + ROUTE)).scheduler.view.config
    assert config.names.waiting == "sglang:num_queue_reqs"
    assert config.scrape_interval == 0.2
    assert (config.weights.queue, config.weights.prefix_cache, config.weights.kv_cache) == (1, 0, 2)
    assert (config.queue_threshold, config.max_queued, config.queue_ttl) == (8, 10, 2.0)
    assert (config.block_bytes, config.max_blocks) == (64, 512)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (pool_doc("p", "app", []), "spec.targetPorts: List should have at least 1 item"),
        (pool_doc("p", "app", [80, 80]), "port numbers must be unique"),
        (
            pool_doc("p", "app", [70000]),
            "spec.targetPorts[0].number: Input should be less than or equal to 65535",
        ),
        (pool_doc("p", "app", [80], "epp", "Sometimes"), "failureMode"),
        (picker_doc("p", scrapeInterval="0s"), "spec.scrapeInterval: must be more than 0s"),
        (picker_doc("p", engine="tgi"), "spec.engine"),
        (picker_doc("p", scorers="{queue: -1}"), "spec.scorers.queue"),
        (objective_doc("o", "p", "high"), "spec.priority"),  # type: ignore[arg-type]
    ],
)
def test_bad_inference_resources_are_refused_naming_the_field(document: str, problem: str) -> None:
    # Loading alone (the plugin's kinds are registered by the fixture below).
    with pytest.raises(ConfigError) as caught:
        load_text(document, "pool.yaml")
    assert problem in str(caught.value)
    assert "pool.yaml" in str(caught.value)


@pytest.fixture(autouse=True)
def _kinds(pools: Pools) -> None:  # noqa: F811
    """Every test here needs the inference kinds registered."""


BBR = """
---
apiVersion: inference.ambient.dev/v1alpha1
kind: BodyBasedRouting
metadata: {name: bbr, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
"""


def config_map(name: str, data: str, managed: str = '"true"') -> str:
    return f"""
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: default
  labels: {{inference.networking.k8s.io/bbr-managed: {managed}}}
data:
{data}"""


def test_body_based_routing_reads_base_models_from_managed_config_maps() -> None:
    text = (
        gateway_doc(80)
        + BBR
        + config_map(
            "llama", "  baseModel: llama-3-8b\n  adapters: |\n    - sql-v1\n    - sql-v2\n"
        )
        + config_map("qwen", "  baseModel: qwen-2\n  adapters: 'chat-a, chat-b'\n")
        + config_map("ignored", "  baseModel: nope\n  adapters: x\n", managed='"false"')
    )
    snapshot = compile_text(text)
    (stage,) = snapshot.pre_route[80].for_host("example.com")
    assert isinstance(stage, BodyBasedRoutingStage)
    assert dict(stage.base_models) == {
        "llama-3-8b": "llama-3-8b",
        "sql-v1": "llama-3-8b",
        "sql-v2": "llama-3-8b",
        "qwen-2": "qwen-2",
        "chat-a": "qwen-2",
        "chat-b": "qwen-2",
    }


class _Staged:
    """What a pre-route stage gets (the data path's StageRequest)."""

    def __init__(self, body: bytes) -> None:
        self.head = head("/v1/chat/completions", method="POST")
        self.body = body


@pytest.mark.parametrize(
    ("body", "status", "model", "base"),
    [
        (b'{"model":"sql-v1","messages":[]}', None, "sql-v1", "llama-3-8b"),
        (b'{"model":"mistral","messages":[]}', None, "mistral", "mistral"),  # its own base
        (b'{"messages":[]}', None, None, None),  # no model: untouched, routed as it is
        (b'{"model":["a"]}', 400, None, None),
        (b"not json", 400, None, None),
    ],
)
def test_the_body_based_routing_stage(
    body: bytes, status: int | None, model: str | None, base: str | None
) -> None:
    stage = BodyBasedRoutingStage(
        "X-Gateway-Model-Name", "X-Gateway-Base-Model-Name", {"sql-v1": "llama-3-8b"}
    )
    request = _Staged(body)
    answer = stage.apply(request)
    assert (answer.status if answer else None) == status
    if answer is not None:
        assert b"model" in answer.body or b"JSON" in answer.body
    assert request.head.get("x-gateway-model-name") == model
    assert request.head.get("x-gateway-base-model-name") == base
    assert request.body == body  # forwarded as it came
