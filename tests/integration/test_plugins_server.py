"""A serving process with a plugin: lifecycle hooks, admin routes, a page, state across a reload."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from gateway.plugins import PluginError, PluginSpec, load_plugins
from gateway.server import GatewayOptions, GatewayProcess
from gateway.stages import PortStages
from tests.fixtures.gateway_process import free_port
from tests.fixtures.plugin import Counter, ModelHeaderStage, plugin_config_yaml
from tests.fixtures.plugins import plugin_sandbox, test_plugin  # noqa: F401  (fixtures)


def stage_of(stages: PortStages) -> ModelHeaderStage:
    (stage,) = stages.for_host("example.com")
    assert isinstance(stage, ModelHeaderStage)
    return stage


@pytest.mark.usefixtures("test_plugin")
async def test_hooks_admin_route_and_state_across_a_reload(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(plugin_config_yaml(port, free_port()))
    process = GatewayProcess(
        GatewayOptions(
            files=[str(config)], admin=("127.0.0.1", admin_port), bind_address="127.0.0.1"
        )
    )
    first = stage_of(process.holder.current.pre_route[port])
    counter = first._counter
    assert isinstance(counter, Counter) and counter.events == []

    await process.start()
    try:
        assert counter.events == ["start"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}") as admin:
            state = (await admin.get("/plugins/test/state")).json()
            assert (state["state_id"], state["builds"], state["version"]) == (id(counter), 1, 1)
            endpoints = (await admin.get("/")).json()["endpoints"]
            assert {"/plugins/test/state", "/ui/test"} <= set(endpoints)
            # A plugin page for people: HTML at /ui/<name>, outside the /plugins JSON paths.
            page = await admin.get("/ui/test")
            assert page.headers["content-type"].startswith("text/html")
            assert page.text.endswith("<p>builds 1</p>")
            # An admin view of serving state: one process, its own view as it is.
            served = (await admin.get("/plugins/test/served")).json()
            assert served == {"pid": os.getpid(), "builds": 1}

            config.write_text(plugin_config_yaml(port, free_port(), header="X-Model"))
            assert await process.reloader.reload("test")
            second = stage_of(process.holder.current.pre_route[port])
            assert second is not first and second.header == "X-Model"
            assert second._counter is counter and counter.builds == 2
            state = (await admin.get("/plugins/test/state")).json()
            assert (state["state_id"], state["builds"], state["version"]) == (id(counter), 2, 2)
    finally:
        process.stop()
        await process.run_until_stopped()
    assert counter.events == ["start", "stop"]


@pytest.mark.usefixtures("plugin_sandbox")
async def test_a_failing_on_start_hook_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(plugin_config_yaml(port, free_port()))
    load_plugins([PluginSpec("scraper", "tests.fixtures.broken_plugins:fail_start", "tests")])
    process = GatewayProcess(GatewayOptions(files=[str(config)], admin=None))
    with pytest.raises(PluginError, match=r"plugin 'scraper'.*on_start failed"):
        await process.start()
    process.telemetry.close()
    assert not process.ready
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
