"""``ambient gateway --workers 2`` with a plugin from AMBIENT_PLUGINS: each worker loads it."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

from tests.fixtures.echo_process import EchoProcess
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.plugin import plugin_config_yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoProcess]:
    echo = EchoProcess("static-echo")
    yield echo
    echo.stop()


def test_workers_serve_through_the_plugin_and_admin_shows_its_status_and_route(
    tmp_path: Path, echo: EchoProcess
) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(plugin_config_yaml(port, echo.port))
    gw = GatewayProcess(
        [config],
        "--workers",
        "2",
        env={"AMBIENT_PLUGINS": "tests.fixtures.plugin", "PYTHONPATH": str(ROOT)},
    )
    try:
        gw.wait_ready(timeout=30)
        # New connections spread over both workers; a worker without the plugin would answer
        # 500 (InvalidKind) for the StaticBackend ref.
        for i in range(20):
            response = httpx.get(f"http://127.0.0.1:{port}/w/{i}", timeout=5)
            assert response.status_code == 200, response.text
            assert "static-echo" in response.text

        dump = httpx.get(f"{gw.admin}/config_dump", timeout=5).json()["config"]
        (policy,) = dump["policies"]
        assert (policy["kind"], policy["name"]) == ("ModelHeader", "model")
        assert policy["targets"][0]["conditions"][0]["reason"] == "Accepted"
        assert dump["preRoute"][0]["port"] == port
        routes = httpx.get(f"{gw.admin}/routes", timeout=5).json()["routes"]
        assert {"ModelHeader", "HTTPRoute", "Gateway"} <= {r["kind"] for r in routes}
        assert all(r["valid"] for r in routes)

        plugins = httpx.get(f"{gw.admin}/plugins", timeout=5).json()["plugins"]
        # The installed entry points (by name: agentgw, the inference extension) load first,
        # then AMBIENT_PLUGINS.
        installed = sorted(ep.name for ep in entry_points(group="ambient.plugins"))
        assert [p["name"] for p in plugins] == [*installed, "tests.fixtures.plugin"]
        before = httpx.get(f"{gw.admin}/plugins/test/state", timeout=5).json()
        assert before["version"] == 1
        # An admin view of serving state comes from each worker, not the supervisor.
        served = httpx.get(f"{gw.admin}/plugins/test/served", timeout=5).json()["workers"]
        pids = {view["pid"] for view in served}
        assert len(served) == 2 and len(pids) == 2 and before["pid"] not in pids

        # A reload compiles again (in the supervisor, whose admin this is) with the same state.
        config.write_text(plugin_config_yaml(port, echo.port, header="X-Model"))
        gw.wait_version(2)
        after = httpx.get(f"{gw.admin}/plugins/test/state", timeout=5).json()
        assert (after["pid"], after["state_id"]) == (before["pid"], before["state_id"])
        assert after["builds"] == before["builds"] + 1
        assert after["version"] == 2
        assert httpx.get(f"http://127.0.0.1:{port}/after", timeout=5).status_code == 200
    finally:
        assert gw.stop() == 0, gw.output()


def test_workers_that_cannot_start_their_plugins_stop_the_gateway(
    tmp_path: Path, echo: EchoProcess
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(plugin_config_yaml(free_port(), echo.port))
    plugins = "tests.fixtures.plugin,tests.fixtures.broken_plugins:fail_start"
    gw = GatewayProcess(
        [config],
        "--workers",
        "2",
        env={"AMBIENT_PLUGINS": plugins, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert gw.proc.wait(timeout=30) == 1
    finally:
        gw.stop()
    output = gw.output()
    assert "on_start failed: cannot reach the metrics endpoint" in output
    assert "plugin 'tests.fixtures.broken_plugins:fail_start'" in output
    assert "restarting" not in output
