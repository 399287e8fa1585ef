"""Fixtures for cluster mode: the API server test double, a client of it, gateways reading it.

The API server here is ``tests.fixtures.kube_api.KubeApiServer``, a stand-in for kube-apiserver
(which cannot run here) speaking its wire protocol; everything else is the real product and
the real ``kubernetes`` client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from gateway.controller import ClusterOptions
from gateway.server import GatewayOptions, GatewayProcess
from tests.fixtures.gateway_process import free_port
from tests.fixtures.kube_api import kube, kube_api, kubeconfig  # noqa: F401  (fixtures)

ClusterGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
def cluster_options(kubeconfig: str) -> ClusterOptions:  # noqa: F811
    """Cluster options with test timing: short Lease, quick back-off."""
    return ClusterOptions(
        kubeconfig,
        lease_namespace="default",
        lease_duration=1.0,
        lease_renew=0.1,
        backoff_initial=0.05,
        backoff_max=0.5,
        watch_timeout=30,
    )


@pytest.fixture
async def cluster_gateway(cluster_options: ClusterOptions) -> AsyncIterator[ClusterGateway]:
    """Start gateways in cluster mode in this process (``identity`` names each replica's Lease
    candidate; they bind different loopback addresses to serve the same Gateway)."""
    started: list[GatewayProcess] = []

    async def start(identity: str = "replica-a", bind_address: str = "127.0.0.1") -> GatewayProcess:
        process = GatewayProcess(
            GatewayOptions(
                files=[],
                cluster=replace(cluster_options, identity=identity),
                admin=("127.0.0.1", free_port()),
                bind_address=bind_address,
                shutdown_grace=0.5,
            )
        )
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        process.stop()
        await process.run_until_stopped()
