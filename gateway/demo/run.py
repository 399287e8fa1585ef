"""``ambient demo``: the gateway on the bundled example, two echo backends, and a tour of it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from gateway.lifeline import preexec_die_with_parent
from ports import PortInUse, holder_pid, probe

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
BACKENDS = {"echo-v1": 18081, "echo-v2": 18082}
SIM_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")  # the InferencePool's Pods
SIM_PORT = 18000
TEAMS = ("billing", "search", "support")  # each with its own long system prompt


def _port_or_free(preferred: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """``preferred`` when nothing listens there on any of ``hosts``, else a port free on all."""
    for candidate in (preferred, 0, 0, 0):
        with contextlib.ExitStack() as stack:
            try:
                first = stack.enter_context(socket.socket())
                first.bind((hosts[0], candidate))
                port = int(first.getsockname()[1])
                for host in hosts[1:]:
                    stack.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {', '.join(hosts)}")


def _write_config(port: int, backends: dict[str, int], sim_port: int, directory: str) -> str:
    docs = list(yaml.safe_load_all(DEMO_CONFIG.read_text()))
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = port
        elif doc["kind"] == "EndpointSlice":
            backend_port = backends[doc["metadata"]["labels"]["kubernetes.io/service-name"]]
            doc["ports"][0]["port"] = backend_port
        elif doc["kind"] == "InferencePool":
            doc["spec"]["targetPorts"] = [{"number": sim_port}]
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


def _llm_tour(base: str, admin: str) -> None:
    """Chat completions through the InferencePool: three teams, each with its own long system
    prompt, four turns each; where they went and why, from the picker's admin view."""
    with httpx.Client(base_url=base, timeout=30) as client:
        first_ttft: list[float] = []
        later_ttft: list[float] = []
        tokens = 0
        prompt_kb = 0.0
        for turn in range(4):
            for team in TEAMS:
                system = f"You are the {team} team's assistant. " + f"{team} policy. " * 400
                prompt_kb = len(system) / 1024
                body = {
                    "model": "llama-3-8b",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"{team} question {turn}"},
                    ],
                    "max_tokens": 8,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                started = time.perf_counter()
                ttft = None
                with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                    for line in stream.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if ttft is None and chunk.get("choices"):
                            ttft = time.perf_counter() - started
                        if chunk.get("usage"):
                            tokens += chunk["usage"]["completion_tokens"]
                (first_ttft if turn == 0 else later_ttft).append(ttft or 0.0)
        shed = client.post(
            "/v1/chat/completions",
            json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-gateway-inference-objective": "batch"},
        )
    view = httpx.get(f"{admin}/plugins/inference", timeout=5).json()
    (pool,) = view["pools"]
    by_team: dict[str, Counter[str]] = {team: Counter() for team in TEAMS}
    # The view lists decisions newest first: oldest first, the turns go team by team.
    turns = [d for d in reversed(pool["decisions"]) if d["priority"] >= 0]
    for i, decision in enumerate(turns[: 4 * len(TEAMS)]):
        by_team[TEAMS[i % len(TEAMS)]][decision["chosen"]] += 1
    print(
        f"  LLM: {4 * len(TEAMS)} chat completions streamed through InferencePool "
        f"{pool['pool']}, {tokens} tokens"
    )
    for team, servers in by_team.items():
        placed = ", ".join(f"{server} x{n}" for server, n in servers.most_common())
        print(f"    team {team:8} (own {prompt_kb:.0f} KB system prompt) -> {placed}")
    print(
        f"    time to first token: first turn {_ms(first_ttft)}, later turns {_ms(later_ttft)} "
        "(their prefix is in that server's KV cache)"
    )
    last = turns[-1]
    scores = ", ".join(f"{server} {score:.2f}" for server, score in last["scores"].items())
    print(
        f"    last decision: {last['chosen']} (prefix {last['matchedBlocks']}/"
        f"{last['prefixBlocks']} blocks); scores {scores}"
    )
    print(
        f"  a sheddable request (objective 'batch') while the pool is not saturated: "
        f"{shed.status_code}; the picker's view: {admin}/plugins/inference"
    )


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms" if values else "-"


class _Stopped(Exception):
    """A signal (SIGTERM, or the terminal's SIGHUP) asked the demo to stop."""


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run_demo(
    port: int = 8080, admin: tuple[str, int] = ("127.0.0.1", 15000), duration: float | None = None
) -> int:
    """Start echo backends and the gateway, tour it, serve until Ctrl-C or ``duration``.

    SIGINT, SIGTERM and SIGHUP stop the children and remove the temporary directory; the
    children also get SIGTERM from the kernel if the demo is killed outright (``gateway.lifeline``).
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the tour prints its own lines
    try:
        # A stale demo (or anything else) on these ports would answer the tour: refuse instead.
        probe("127.0.0.1", port, setting=f"--port {port}")
        probe(admin[0], admin[1], setting=f"--admin {admin[0]}:{admin[1]}")
    except PortInUse as exc:
        print(f"ambient demo: {exc}", file=sys.stderr)
        return 1
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in _STOP_SIGNALS}
    try:
        return _run(port, admin, duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(port: int, admin: tuple[str, int], duration: float | None) -> int:
    children: list[subprocess.Popen[bytes]] = []
    admin_url = f"http://{admin[0]}:{admin[1]}"
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ambient-demo-") as tmp:
        backends = {name: _port_or_free(preferred) for name, preferred in BACKENDS.items()}
        sim_port = _port_or_free(SIM_PORT, SIM_HOSTS)
        config = _write_config(port, backends, sim_port, tmp)

        def spawn(*args: str) -> subprocess.Popen[bytes]:
            child = subprocess.Popen(
                [sys.executable, "-m", *args], preexec_fn=preexec_die_with_parent()
            )
            children.append(child)
            return child

        try:
            echoes = [
                spawn("gateway.demo.echo", "--port", str(backend_port), "--name", name)
                for name, backend_port in backends.items()
            ]
            sim = spawn(
                "gateway.cli", "sim",
                "--listen", f"{SIM_HOSTS[0]}:{sim_port}", "--replicas", str(len(SIM_HOSTS)),
                "--time-scale", "0.25", "--seed", "1",
            )  # fmt: skip
            gateway = spawn(
                "gateway.cli", "gateway", "-f", config,
                "--admin", f"{admin[0]}:{admin[1]}", "--bind-address", "127.0.0.1",
            )  # fmt: skip
            deadline = time.monotonic() + 20
            for child, backend_port in zip(echoes, backends.values(), strict=True):
                _wait_ready(f"http://127.0.0.1:{backend_port}/stats", child, deadline)
            for host in SIM_HOSTS:
                _wait_ready(f"http://{host}:{sim_port}/health", sim, deadline)
            _wait_ready(f"{admin_url}/healthz/ready", gateway, deadline)
            _check_owner(gateway, port, admin[1])
            print(f"ambient demo: gateway on {base}, admin on {admin_url}, config {DEMO_CONFIG}")
            print(f"  model servers: ambient sim on {', '.join(SIM_HOSTS)} port {sim_port}")
            _tour(base, admin_url)
            _llm_tour(base, admin_url)
            print(
                f"\nTry: curl -i {base}/chat   |   curl -N '{base}/sse?events=20&interval_ms=200'"
                f"   |   curl {admin_url}/routes\n     curl -N {base}/v1/chat/completions -d "
                '\'{"model":"llama-3-8b","stream":true,"messages":[{"role":"user",'
                f'"content":"hi"}}]}}\'   |   curl {admin_url}/plugins/inference\n'
                "Ctrl-C stops the demo."
            )
            _serve_until(duration, children)
        except (KeyboardInterrupt, _Stopped):
            pass
        except RuntimeError as exc:
            print(f"ambient demo: {exc}", file=sys.stderr)
            return 1
        finally:
            _stop_children(children)
    return 0


def _check_owner(gateway: subprocess.Popen[bytes], port: int, admin_port: int) -> None:
    """The gateway answering is the one this demo started (not a stale one from another run)."""
    for what, bound in (("listener", port), ("admin", admin_port)):
        owner = holder_pid(bound)
        if owner != gateway.pid:
            raise RuntimeError(
                f"the {what} port {bound} is served by pid {owner}, not by this demo's gateway "
                f"(pid {gateway.pid})"
            )


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child, wait for them (then SIGKILL); a second signal does not cut this."""
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (*_STOP_SIGNALS, signal.SIGINT)}
    try:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)


def _serve_until(duration: float | None, children: list[subprocess.Popen[bytes]]) -> None:
    end = None if duration is None else time.monotonic() + duration
    while end is None or time.monotonic() < end:
        if any(child.poll() is not None for child in children):
            codes = json.dumps([child.returncode for child in children])
            raise RuntimeError(f"a demo process exited unexpectedly (exit codes {codes})")
        time.sleep(0.5)
