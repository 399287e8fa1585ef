"""The API server double (a stand-in for kube-apiserver, which cannot run here) answers the
real ``kubernetes`` client the way the API server does: these are the behaviours the cluster
tests lean on."""

from __future__ import annotations

import pytest
from kubernetes import client, watch

from cluster.status import StatusWriter
from tests.fixtures.cluster_objects import gateway, http_route
from tests.fixtures.kube_api import GATEWAY, KubeApiServer

ROUTES = (GATEWAY, "v1", "httproutes")


def test_list_pages_carry_a_resource_version_and_continue_tokens(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    for i in range(5):
        kube_api.apply(http_route(f"r{i}", "/", "svc"))
    first = custom.list_cluster_custom_object(*ROUTES, limit=2)
    assert [o["metadata"]["name"] for o in first["items"]] == ["r0", "r1"]
    assert first["metadata"]["resourceVersion"] == str(kube_api.revision)
    rest = custom.list_cluster_custom_object(
        *ROUTES, limit=10, _continue=first["metadata"]["continue"]
    )
    assert [o["metadata"]["name"] for o in rest["items"]] == ["r2", "r3", "r4"]
    assert "continue" not in rest["metadata"]


def test_a_watch_streams_changes_after_a_version_then_bookmarks(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    kube_api.apply(http_route("r1", "/", "a"))
    version = custom.list_cluster_custom_object(*ROUTES)["metadata"]["resourceVersion"]
    kube_api.apply(http_route("r1", "/", "b"))
    custom.delete_namespaced_custom_object(GATEWAY, "v1", "default", "httproutes", "r1")
    seen = []
    for event in watch.Watch(return_type=object).stream(
        custom.list_cluster_custom_object,
        *ROUTES,
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        seen.append(event["type"])
        if event["type"] == "BOOKMARK":
            assert int(event["raw_object"]["metadata"]["resourceVersion"]) == kube_api.revision
            break
    assert seen == ["MODIFIED", "DELETED", "BOOKMARK"]


def test_a_watch_from_a_compacted_version_is_410_gone(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    kube_api.apply(http_route("r1", "/", "a"))
    version = custom.list_cluster_custom_object(*ROUTES)["metadata"]["resourceVersion"]
    kube_api.apply(http_route("r1", "/", "b"))
    kube_api.compact()
    stream = watch.Watch(return_type=object).stream(
        custom.list_cluster_custom_object, *ROUTES, resource_version=version, timeout_seconds=5
    )
    with pytest.raises(client.ApiException) as raised:
        next(iter(stream))
    assert raised.value.status == 410


def test_a_status_write_with_a_stale_version_is_409_and_the_writer_retries(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    stale = kube_api.apply(gateway(8080))
    kube_api.apply({**gateway(8080), "metadata": {**stale["metadata"], "labels": {"x": "y"}}})
    body = {**stale, "status": {"conditions": []}}
    with pytest.raises(client.ApiException) as raised:
        custom.replace_namespaced_custom_object_status(
            GATEWAY, "v1", "default", "gateways", "gw", body
        )
    assert raised.value.status == 409

    writer = StatusWriter(kube)
    resource = next(iter(_discovered(kube, "Gateway")))
    assert writer.write(resource, stale, lambda obj: {"seen": obj["metadata"].get("labels", {})})
    assert (writer.conflicts, writer.writes) == (1, 1)
    written = kube_api.get(GATEWAY, "gateways", "default", "gw") or {}
    assert written["status"] == {"seen": {"x": "y"}}  # computed from the re-read object
    assert written["spec"] == stale["spec"]  # the status subresource leaves spec alone
    assert not writer.write(resource, written, lambda obj: {"seen": {"x": "y"}})  # unchanged


def _discovered(kube: client.ApiClient, kind: str) -> list:
    from cluster.resources import discover

    return list(discover(kube, {(GATEWAY, kind): ["v1"]}).values())


def test_token_review_answers_for_registered_tokens(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    kube_api.tokens["good"] = {"username": "system:serviceaccount:ambient-system:ztunnel"}
    api = client.AuthenticationV1Api(kube)
    review = api.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token="good"))
    )
    assert review.status.authenticated
    assert review.status.user.username == "system:serviceaccount:ambient-system:ztunnel"
    review = api.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token="bad"))
    )
    assert not review.status.authenticated
