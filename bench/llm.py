"""The LLMBackend's cost: chat completions straight to a provider vs through the gateway.

Run ``python -m bench.llm``. A provider stand-in (:mod:`bench.llm_provider`, uvicorn with
httptools and uvloop) answers at once; ``ambient gateway`` serves an LLMBackend in front of it
(plugin ``agentgw``; traces sampled off). ``wrk -t1`` POSTs a small chat request with
``--connections`` connections, in interleaved rounds (medians shown), three ways:

* ``direct``: to the stand-in's ``/v1/chat/completions``;
* ``relay``: through the gateway to the same endpoint (same format: the model spliced in place,
  the provider's key injected, the answer relayed and its usage read);
* ``translated``: through the gateway to the stand-in's ``/v1/messages`` (the OpenAI request
  translated to Anthropic Messages and the answer back).

The gateway's CPU per request is utime + stime from /proc over the requests wrk completed. On a
2-core machine wrk, the stand-in and the gateway share the cores: the figures compare the three
ways on one machine, they are not the gateway's ceiling.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.asgi import Launch, start, uvicorn_launch
from bench.processes import Service, cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"model":"%s","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32}'


def config(port: int, provider_port: int) -> str:
    """A Gateway, the provider keys' Secret, the LLMBackend and its route."""
    url = f"http://127.0.0.1:{provider_port}"
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: key}}
stringData: {{key: sk-bench}}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {{name: models}}
spec:
  providers:
  - {{name: openai, type: OpenAI, url: "{url}/v1", apiKeySecretRef: {{name: key, key: key}}}}
  - {{name: claude, type: Anthropic, url: "{url}", apiKeySecretRef: {{name: key, key: key}}}}
  models:
  - {{name: gpt-4o-mini, provider: openai}}
  - {{name: "claude-*", provider: claude}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
  - backendRefs: [{{group: agents.ambient.dev, kind: LLMBackend, name: models}}]
"""


def gateway_launch(provider_port: int) -> Launch:
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-llm-")
    path = Path(workdir.name, "llm.yaml")
    path.write_text(config(port, provider_port))
    argv = [sys.executable, "-m", "gateway.cli", "gateway", "-f", str(path)]
    argv += ["--admin", f"127.0.0.1:{admin}", "--bind-address", "127.0.0.1"]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(
        os.environ,
        PYTHONPATH=pythonpath,
        AMBIENT_PLUGINS="agentgw.plugin:register",
        OTEL_TRACES_SAMPLER="always_off",
    )
    return Launch("ambient gateway (LLMBackend)", port, argv, env, workdir.name, workdir)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # the gateway's CPU per request


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, model: str, connections: int, seconds: float, gateway: Service | None) -> Result:
    """wrk POSTing the chat request for ``model``; the gateway's CPU accounted when given."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{BODY % model}'\n"
        )
    pids = gateway.refresh_pids() if gateway else []
    before = cpu_seconds(pids) if pids else 0.0
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)
    after = cpu_seconds(pids) if pids else 0.0
    if "Non-2xx" in out:
        raise RuntimeError(f"errors from the server:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p50 and p99, out
    cpu = (after - before) / requests * 1e6 if pids and requests else None
    return Result(rps, _ms(*p50.groups()), _ms(*p99.groups()), cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="each run's length")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args(argv)
    provider = start(uvicorn_launch("bench.llm_provider:app"))
    gateway = start(gateway_launch(provider.port))
    ways = {
        "direct": (provider.port, "gpt-4o-mini", None),
        "relay": (gateway.port, "gpt-4o-mini", gateway),
        "translated": (gateway.port, "claude-bench", gateway),
    }
    results: dict[str, list[Result]] = {name: [] for name in ways}
    try:
        for port, model, _ in ways.values():  # warm up: connections, imports, caches
            wrk(port, model, args.connections, 1.0, None)
        for _ in range(args.rounds):
            for name, (port, model, target) in ways.items():
                results[name].append(wrk(port, model, args.connections, args.seconds, target))
    finally:
        gateway.stop()
        provider.stop()
    print(f"wrk -t1 -c{args.connections}, {args.seconds:g} s runs, median of {args.rounds} rounds")
    print(f"{'way':<12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'gateway CPU µs/req':>20}")
    for name, runs in results.items():
        cpu = [r.cpu_us for r in runs if r.cpu_us is not None]
        print(
            f"{name:<12}{statistics.median(r.rps for r in runs):>10,.0f}"
            f"{statistics.median(r.p50_ms for r in runs):>9.2f}"
            f"{statistics.median(r.p99_ms for r in runs):>9.2f}"
            f"{(f'{statistics.median(cpu):,.0f}' if cpu else '-'):>20}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
