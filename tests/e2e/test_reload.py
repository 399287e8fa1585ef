"""Hot reload of ``ambient gateway``: file changes and SIGHUP swap config, failing no request."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port


def write_config(
    path: Path, port: int, echo_a: EchoProcess, echo_b: EchoProcess, target: str
) -> None:
    text = (
        gateway_yaml(port)
        + service_yaml("svc-a", echo_a.port)
        + service_yaml("svc-b", echo_b.port)
        + route_yaml("main", target)
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, as editors and ConfigMap updates do


@pytest.fixture
def gateway(
    tmp_path: Path, echo_a: EchoProcess, echo_b: EchoProcess
) -> Iterator[tuple[GatewayProcess, Path, int]]:
    port = free_port()
    config = tmp_path / "routes.yaml"
    write_config(config, port, echo_a, echo_b, "svc-a")
    gw = GatewayProcess([config])
    gw.wait_ready()
    yield gw, config, port
    assert gw.stop() == 0, gw.output()


def test_reload_under_load_fails_no_request(
    gateway: tuple[GatewayProcess, Path, int], echo_a: EchoProcess, echo_b: EchoProcess
) -> None:
    gw, config, port = gateway
    version = gw.config_version()
    statuses: Counter[int] = Counter()
    backends: list[tuple[float, str]] = []
    swapped_at: list[float] = []

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for i in range(n):
                response = await c.get(f"/load/{i}")
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    backends.append((time.monotonic(), response.json()["backend"]))

    async def swap() -> None:
        while len(backends) < 200:  # wait until load is flowing
            await asyncio.sleep(0.01)
        write_config(config, port, echo_a, echo_b, "svc-b")
        await asyncio.to_thread(gw.wait_version, version + 1)
        swapped_at.append(time.monotonic())

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(swap(), *(client(150) for _ in range(8))), 90)

    asyncio.run(main())
    assert statuses == Counter({200: 1200}), statuses
    seen = {name for _, name in backends}
    assert seen == {"backend-a", "backend-b"}
    after = [name for t, name in backends if t > swapped_at[0] + 0.05]
    assert after and set(after) == {"backend-b"}


def test_invalid_config_is_rejected_and_old_keeps_serving(
    gateway: tuple[GatewayProcess, Path, int],
) -> None:
    gw, config, port = gateway
    version = gw.config_version()
    config.write_text(
        config.read_text() + "\n---\nkind: HTTPRoute\napiVersion: "
        "gateway.networking.k8s.io/v1\nmetadata: {name: bad}\nspec: {rules: 3}\n"
    )
    deadline = time.monotonic() + 10
    while "config rejected" not in gw.output():
        assert time.monotonic() < deadline, gw.output()
        time.sleep(0.05)
    assert "HTTPRoute default/bad" in gw.output()
    assert gw.config_version() == version
    response = httpx.get(f"http://127.0.0.1:{port}/still-here", timeout=5)
    assert response.status_code == 200
    assert response.json()["backend"] == "backend-a"


def test_sighup_reloads(gateway: tuple[GatewayProcess, Path, int]) -> None:
    gw, _config, _port = gateway
    version = gw.config_version()
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_version(version + 1)
