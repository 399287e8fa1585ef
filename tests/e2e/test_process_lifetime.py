"""Parents stop their children: ``ambient demo`` on SIGTERM, SIGINT and SIGHUP (children gone,
ports free, temporary directory removed), and children of a SIGKILLed ``ambient demo`` or
``ambient gateway --workers 2`` supervisor exit by themselves (``PR_SET_PDEATHSIG``). A second
demo refuses to start, naming the port, instead of touring the first one's gateway."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.processes import alive, command_line, descendants, port_free, wait_gone

READY_LINE = "Ctrl-C stops the demo."


@dataclass
class Demo:
    """A running ``ambient demo`` and what it made."""

    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    log: Path
    children: list[int]
    ports: list[int]  # the gateway's, the admin's and the echo backends'
    temp_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port, admin = free_port(), free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port),
             "--admin", f"127.0.0.1:{admin}"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    temp_dir: Path | None = None
    try:
        deadline = time.monotonic() + 60
        while READY_LINE not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        children = descendants(proc.pid)
        argvs = [command_line(pid) for pid in children]
        echo_ports = [int(_flag(a, "--port")) for a in argvs if "gateway.demo.echo" in a]
        (config,) = [_flag(a, "-f") for a in argvs if "gateway" in a and "-f" in a]
        assert len(children) == 4 and len(echo_ports) == 2, argvs
        temp_dir = Path(config).parent
        yield Demo(proc, port, admin, log, children, [port, admin, *echo_ports], temp_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if temp_dir is not None:  # a SIGKILLed demo cannot remove it
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_demo_stops_its_children_and_cleans_up(demo: Demo, signum: signal.Signals) -> None:
    assert demo.temp_dir.is_dir() and str(demo.temp_dir).startswith(tempfile.gettempdir())
    demo.proc.send_signal(signum)
    assert demo.proc.wait(timeout=30) == 0, demo.output()
    assert wait_gone(demo.children, timeout=5) == []
    assert all(port_free(port) for port in demo.ports), demo.ports
    assert not demo.temp_dir.exists()


def test_children_of_a_killed_demo_exit(demo: Demo) -> None:
    demo.proc.kill()
    demo.proc.wait()
    # The gateway drains first (nothing in flight: at once); bounded by its 5 s grace.
    assert wait_gone(demo.children, timeout=15) == [], [command_line(p) for p in demo.children]
    assert all(port_free(port) for port in demo.ports), demo.ports


def test_second_demo_refuses_to_tour_the_first(demo: Demo) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(demo.port),
         "--admin", f"127.0.0.1:{free_port()}", "--duration", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "split 80/20" not in done.stdout  # no tour ran
    assert f"ambient demo: port {demo.port} on 127.0.0.1 (--port {demo.port})" in done.stderr
    assert "is already in use, held by pid " in done.stderr
    assert all(alive(pid) for pid in demo.children)  # the first demo is left alone


def test_workers_of_a_killed_supervisor_exit(tmp_path: Path, echo_a: EchoProcess) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(
        gateway_yaml(port) + service_yaml("svc-a", echo_a.port) + route_yaml("r", "svc-a")
    )
    gw = GatewayProcess([config], "--workers", "2")
    try:
        gw.wait_ready(timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        workers = descendants(gw.proc.pid)
        assert len(workers) >= 2, [command_line(p) for p in workers]
        gw.proc.kill()
        gw.proc.wait()
        assert wait_gone(workers, timeout=15) == [], [command_line(p) for p in workers]
        assert port_free(port) and port_free(gw.admin_port)
    finally:
        gw.stop()
