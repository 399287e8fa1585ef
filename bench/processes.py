"""Processes under test for the benchmarks: echo, gateway, nginx; their CPU time and memory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0, host: str = "127.0.0.1"
) -> None:
    """Block until something accepts on ``host:port`` (or the process died / timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of the processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class Service:
    """A started subprocess listening on ``port``; ``pids`` are the processes to account."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str] | None = None
    pids: list[int] = field(default_factory=list)

    def refresh_pids(self) -> list[int]:
        """Re-read the process tree (workers may fork after start)."""
        self.pids = descendants(self.proc.pid)
        return self.pids

    def stop(self) -> None:
        """Terminate the process tree and clean up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            self.workdir.cleanup()


def start_echo(name: str = "echo") -> Service:
    """``python -m gateway.demo.echo`` on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.demo.echo", "--port", str(port), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    service = Service(name, port, proc)
    service.refresh_pids()
    return service


def floor_argv(port: int, echo_port: int) -> list[str]:
    """The floor proxy's command line."""
    return [sys.executable, "-m", "bench.floor_proxy", str(port), str(echo_port)]


def start_floor(echo_port: int) -> Service:
    """``bench.floor_proxy``: the minimal uvloop + httptools proxy, the floor for this design."""
    port = free_port()
    proc = subprocess.Popen(
        floor_argv(port, echo_port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    service = Service("floor proxy", port, proc)
    service.refresh_pids()
    return service


def gateway_config(listen_port: int, echo_port: int) -> str:
    """A Gateway, a Service/EndpointSlice for the echo backend and one HTTPRoute to it."""
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {listen_port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {echo_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: bench, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      backendRefs: [{{name: echo, port: 80}}]
"""


@dataclass
class GatewayLaunch:
    """How to start ``ambient gateway`` on the bench config: argv, environment, its temp dir."""

    port: int
    argv: list[str]
    env: dict[str, str]
    workdir: tempfile.TemporaryDirectory[str]


def gateway_launch(
    echo_port: int, workers: int = 1, pythonpath: str | None = None
) -> GatewayLaunch:
    """The gateway (routing, metrics, tracing sampled off, admin API on) on free ports.

    ``pythonpath`` puts another copy of the package first on the import path (bench.compiled).
    Start it with ``cwd=workdir``: ``python -c`` puts its working directory first on sys.path.
    """
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-gw-")
    config = Path(workdir.name, "routes.yaml")
    config.write_text(gateway_config(port, echo_port))
    env = dict(os.environ, OTEL_TRACES_SAMPLER="always_off")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    argv = [
        sys.executable,
        "-c",
        "import sys; from gateway.cli import main; sys.exit(main())",
        "gateway",
        "-f",
        str(config),
        "--admin",
        f"127.0.0.1:{admin}",
        "--bind-address",
        "127.0.0.1",
        "--workers",
        str(workers),
    ]
    return GatewayLaunch(port, argv, env, workdir)


def start_gateway(echo_port: int, workers: int = 1, pythonpath: str | None = None) -> Service:
    """``ambient gateway`` as :func:`gateway_launch` describes it, once it listens."""
    launch = gateway_launch(echo_port, workers, pythonpath)
    proc = subprocess.Popen(
        launch.argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=launch.env,
        cwd=launch.workdir.name,
    )
    wait_listening(launch.port, proc)
    service = Service(f"gateway x{workers}", launch.port, proc, launch.workdir)
    service.refresh_pids()
    return service


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  upstream echo {{ server 127.0.0.1:{echo_port}; keepalive 256;{upstream_extra} }}
  server {{
    listen 127.0.0.1:{port} reuseport{listen_extra};{server_extra}
    location / {{
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def _run_nginx(
    binary: str,
    name: str,
    echo_port: int,
    *,
    upstream_extra: str = "",
    listen_extra: str = "",
    server_extra: str = "",
) -> Service:
    """nginx with one worker proxying to the echo on ``echo_port`` (``NGINX_CONF`` plus extras)."""
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-nginx-")
    conf = Path(workdir.name, "nginx.conf")
    conf.write_text(
        NGINX_CONF.format(
            dir=workdir.name,
            echo_port=echo_port,
            port=port,
            upstream_extra=upstream_extra,
            listen_extra=listen_extra,
            server_extra=server_extra,
        )
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    service = Service(name, port, proc, workdir)
    service.refresh_pids()
    return service


def start_nginx(echo_port: int) -> Service | None:
    """nginx with one worker, keep-alive upstream, buffering off; None when nginx is missing."""
    binary = _nginx_binary()
    return None if binary is None else _run_nginx(binary, "nginx 1 worker", echo_port)


def nginx_version(binary: str) -> tuple[int, ...]:
    """``(1, 22, 1)`` from ``nginx -v``; ``()`` when it can't be read."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    _, _, version = out.partition("nginx/")
    try:
        return tuple(int(part) for part in version.split()[0].split("."))
    except (IndexError, ValueError):
        return ()


def start_nginx_h2c(echo_port: int) -> Service | None:
    """nginx with one worker serving cleartext HTTP/2 (prior knowledge), HTTP/1.1 keep-alive
    upstream, buffering off; None when nginx is missing.

    No connection recycling (``keepalive_requests``) on either side, so one long h2 connection
    stays one connection. nginx >= 1.25.1 spells HTTP/2 ``http2 on;``, older ones
    ``listen ... http2``.
    """
    binary = _nginx_binary()
    if binary is None:
        return None
    new_syntax = nginx_version(binary) >= (1, 25, 1)
    return _run_nginx(
        binary,
        "nginx h2c 1 worker",
        echo_port,
        upstream_extra=" keepalive_requests 1000000;",
        listen_extra="" if new_syntax else " http2",
        server_extra=("\n    http2 on;" if new_syntax else "")
        + "\n    keepalive_requests 1000000;\n    http2_max_concurrent_streams 128;",
    )
