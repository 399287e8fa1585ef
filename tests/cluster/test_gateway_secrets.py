"""Cluster mode reads only the Secrets a listener references, and follows their rotation.

tests/fixtures/kube_api.py stands in for kube-apiserver (none can run here)."""

from __future__ import annotations

import base64

from gateway.server import GatewayProcess
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.certs import Leaf, authority
from tests.fixtures.cluster_objects import eventually, gateway, gateway_class
from tests.fixtures.gateway_process import free_port
from tests.fixtures.kube_api import GATEWAY, KubeApiServer


def tls_secret(name: str, leaf: Leaf) -> dict:
    """A ``kubernetes.io/tls`` Secret holding ``leaf``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(leaf.cert_pem).decode(),
            "tls.key": base64.b64encode(leaf.key_pem).decode(),
        },
    }


def _certificates(process: GatewayProcess) -> list[str]:
    (listener,) = process.holder.current.dump["listeners"]
    return list(listener.get("tls", {}).get("certificates", []))


async def test_only_the_referenced_secret_is_read_and_its_rotation_is_followed(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    first = authority().issue("one.example.com")
    kube_api.apply(tls_secret("cert", first))
    kube_api.apply(tls_secret("unrelated", authority().issue("other.example.com")))
    kube_api.apply(gateway_class())
    kube_api.apply(
        gateway(
            port,
            protocol="HTTPS",
            hostname="one.example.com",
            tls={"mode": "Terminate", "certificateRefs": [{"name": "cert"}]},
        )
    )
    process = await cluster_gateway()
    controller = process.controller
    assert controller is not None
    assert process.holder.current.port_protocols == {port: "HTTPS"}
    read = {
        key
        for scope, objects in controller.cache.objects.items()
        if scope.resource.kind == "Secret"
        for key in objects
    }
    assert read == {("default", "cert")}
    secret_calls = [path for _, path in kube_api.requests if "/secrets" in path]
    assert secret_calls and all(
        "/namespaces/default/secrets" in p and "fieldSelector=metadata.name%3Dcert" in p
        for p in secret_calls
    ), secret_calls
    before = _certificates(process)

    kube_api.apply(tls_secret("cert", authority().issue("one.example.com")))
    await eventually(lambda: _certificates(process) != before, what="the rotated certificate")
    await eventually(
        lambda: "status" in (kube_api.get(GATEWAY, "gateways", "default", "gw") or {}),
        what="Gateway status",
    )
    gw = kube_api.get(GATEWAY, "gateways", "default", "gw") or {}
    (listener,) = gw["status"]["listeners"]
    conditions = {c["type"]: c["status"] for c in listener["conditions"]}
    assert conditions["Programmed"] == "True" and conditions["ResolvedRefs"] == "True"
