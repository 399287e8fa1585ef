"""``PluginApi.worker_call`` and ``on_admin_start``: the admin process calls every serving
process, and a sticky call's last value reaches a worker that restarts, before it serves."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.worker_call_plugin import minimal_gateway_yaml

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AMBIENT_PLUGINS": "tests.fixtures.worker_call_plugin", "PYTHONPATH": str(ROOT)}


def _pids(gw: GatewayProcess) -> list[dict[str, object]]:
    response = httpx.get(f"{gw.admin}/plugins/calls/pids", timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_worker_calls_reach_both_workers_and_a_restarted_worker_gets_the_sticky_value(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(minimal_gateway_yaml(free_port()))
    gw = GatewayProcess([config], "--workers", "2", env=ENV)
    try:
        gw.wait_ready(timeout=30)
        first = _pids(gw)
        assert len(first) == 2
        # Answers come from the two workers, not the supervisor that serves the admin API.
        assert len({a["pid"] for a in first}) == 2
        assert all(a["pid"] != a["admin"] == gw.proc.pid for a in first)
        # on_admin_start's push ran before the workers existed: they got it at spawn.
        assert [a["value"] for a in first] == ["initial", "initial"]

        pushed = httpx.post(f"{gw.admin}/plugins/calls/set?value=v2", timeout=10).json()
        assert sorted(pushed) == sorted(a["pid"] for a in first)

        victim = int(str(first[0]["pid"]))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _pids(gw)
            if len(now) == 2 and victim not in {a["pid"] for a in now}:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker {victim} was not replaced:\n{gw.output()}")
        assert [a["value"] for a in now] == ["v2", "v2"]
    finally:
        gw.stop()


def test_one_process_gateway_answers_its_own_worker_calls(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(minimal_gateway_yaml(free_port()))
    gw = GatewayProcess([config], env=ENV)
    try:
        gw.wait_ready()
        assert _pids(gw) == [{"pid": gw.proc.pid, "value": "initial", "admin": gw.proc.pid}]
        httpx.post(f"{gw.admin}/plugins/calls/set?value=x", timeout=5)
        assert _pids(gw)[0]["value"] == "x"
    finally:
        gw.stop()
