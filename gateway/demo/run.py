"""``ambient demo``: the gateway on the bundled example, two echo backends, and a tour of it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
BACKENDS = {"echo-v1": 18081, "echo-v2": 18082}


def _port_or_free(preferred: int) -> int:
    """``preferred`` when nothing listens there, else any free loopback port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(port: int, backends: dict[str, int], directory: str) -> str:
    docs = list(yaml.safe_load_all(DEMO_CONFIG.read_text()))
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = port
        elif doc["kind"] == "EndpointSlice":
            backend_port = backends[doc["metadata"]["labels"]["kubernetes.io/service-name"]]
            doc["ports"][0]["port"] = backend_port
    path = os.path.join(directory, "demo.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump_all(docs, fh, sort_keys=False)
    return path


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in time")


def _tour(base: str, admin: str) -> None:
    with httpx.Client(base_url=base, timeout=5) as client:
        served = Counter(client.get("/chat", params={"i": i}).json()["backend"] for i in range(200))
        print(f"  200 requests to /chat, split 80/20 by weight: {dict(sorted(served.items()))}")
        canary = client.get("/chat", headers={"x-canary": "true"}).json()["backend"]
        print(f"  with 'x-canary: true' (header match wins): {canary}")
        redirect = client.get("/old", follow_redirects=False)
        print(f"  GET /old -> {redirect.status_code} Location: {redirect.headers.get('location')}")
        started = time.perf_counter()
        with client.stream("GET", "/sse", params={"events": 5, "interval_ms": 100}) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
        print(f"  SSE: {len(events)} events streamed in {time.perf_counter() - started:.2f}s")
    metrics = httpx.get(f"{admin}/metrics", timeout=5).text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("istio_requests_total{")
    )
    print(f"  istio_requests_total at {admin}/metrics: {total:.0f}")


def run_demo(
    port: int = 8080, admin: tuple[str, int] = ("127.0.0.1", 15000), duration: float | None = None
) -> int:
    """Start echo backends and the gateway, tour it, serve until Ctrl-C or ``duration``."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the tour prints its own lines
    children: list[subprocess.Popen[bytes]] = []
    admin_url = f"http://{admin[0]}:{admin[1]}"
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ambient-demo-") as tmp:
        backends = {name: _port_or_free(preferred) for name, preferred in BACKENDS.items()}
        config = _write_config(port, backends, tmp)
        try:
            for name, backend_port in backends.items():
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "gateway.demo.echo",
                            "--port",
                            str(backend_port),
                            "--name",
                            name,
                        ]
                    )
                )
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gateway.cli",
                        "gateway",
                        "-f",
                        config,
                        "--admin",
                        f"{admin[0]}:{admin[1]}",
                        "--bind-address",
                        "127.0.0.1",
                    ]
                )
            )
            deadline = time.monotonic() + 20
            for child, backend_port in zip(children, backends.values(), strict=False):
                _wait_ready(f"http://127.0.0.1:{backend_port}/stats", child, deadline)
            _wait_ready(f"{admin_url}/healthz/ready", children[-1], deadline)
            print(f"ambient demo: gateway on {base}, admin on {admin_url}, config {DEMO_CONFIG}")
            _tour(base, admin_url)
            print(
                f"\nTry: curl -i {base}/chat   |   curl -N '{base}/sse?events=20&interval_ms=200'"
                f"   |   curl {admin_url}/routes\nCtrl-C stops the demo."
            )
            _serve_until(duration, children)
        except KeyboardInterrupt:
            pass
        except RuntimeError as exc:
            print(f"ambient demo: {exc}", file=sys.stderr)
            return 1
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=10)
                if child.poll() is None:
                    child.kill()
    return 0


def _serve_until(duration: float | None, children: list[subprocess.Popen[bytes]]) -> None:
    end = None if duration is None else time.monotonic() + duration
    while end is None or time.monotonic() < end:
        if any(child.poll() is not None for child in children):
            codes = json.dumps([child.returncode for child in children])
            raise RuntimeError(f"a demo process exited unexpectedly (exit codes {codes})")
        time.sleep(0.5)
