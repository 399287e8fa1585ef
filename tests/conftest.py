"""Shared fixtures: free ports, echo backends, a running data path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.demo.echo import EchoServer, start_echo
from gateway.lb.health import registry
from gateway.observability.propagation import NoopTelemetry
from gateway.proxy.listeners import ListenerManager
from gateway.proxy.options import ProxyOptions
from gateway.snapshot import SnapshotHolder
from tests.fixtures.gateway_process import free_port as _free_port
from tests.fixtures.loops import loop_factories

# Fixture modules available to every test: the plugin sandbox, the responder test plugin, a
# serving process around it, and ext_proc peers (an ``ambient epp`` server).
pytest_plugins = [
    "tests.fixtures.plugins",
    "tests.fixtures.responders",
    "tests.fixtures.responder_gateway",
    "tests.fixtures.extproc_peers",
]

EchoFactory = Callable[[str], Awaitable[EchoServer]]
GatewayFactory = Callable[..., Awaitable[ListenerManager]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test on asyncio's loop, some on uvloop's too (``tests/fixtures/loops.py``)."""
    return loop_factories(item)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on."""
    return _free_port()


@pytest.fixture(autouse=True)
def _fresh_health() -> None:
    """Passive-health state is process-wide: start every test from a clean registry."""
    registry.clear()


@pytest.fixture
async def echo_factory() -> AsyncIterator[EchoFactory]:
    """Start named echo backends on free loopback ports; all are closed after the test."""
    servers: list[EchoServer] = []

    async def start(name: str) -> EchoServer:
        server = await start_echo("127.0.0.1", 0, name)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def echo(echo_factory: EchoFactory) -> EchoServer:
    """One echo backend named ``echo``."""
    return await echo_factory("echo")


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Run a ListenerManager on 127.0.0.1 for a SnapshotHolder; closed after the test."""
    managers: list[ListenerManager] = []

    async def start(
        holder: SnapshotHolder, options: ProxyOptions | None = None, telemetry: object | None = None
    ) -> ListenerManager:
        manager = ListenerManager(
            holder,
            telemetry or NoopTelemetry(),
            bind_address="127.0.0.1",
            options=options,  # type: ignore[arg-type]
        )
        await manager.sync()
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        await manager.close(grace=0.5)
