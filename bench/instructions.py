"""CPU instructions per proxied request, counted by callgrind: a figure VM noise does not move.

Run ``python -m bench.instructions`` (needs valgrind: ``apt-get install valgrind``). The floor proxy
(``bench.floor_proxy``) and the gateway each run under callgrind with instrumentation off; after a
warm-up, instrumentation is switched on for ``--requests`` keep-alive GETs on ``--connections``
connections (1 KiB responses from the same echo upstream), then off, and the counted instructions
are divided by the requests. Only user space is counted: the kernel's share (reads, writes,
wake-ups) is about the same for both and is left out. ``bench.compiled --instructions`` uses the
same counter on a mypyc-compiled build.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench.processes import floor_argv, free_port, gateway_launch, start_echo, wait_listening

PATH = "/bytes/1024"
_TOTALS = re.compile(rb"^totals: (\d+)", re.MULTILINE)


def drive(port: int, requests: int, connections: int, path: str = PATH) -> None:
    """``requests`` keep-alive GETs on each of ``connections`` connections, each answer checked."""
    request = f"GET {path} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n".encode()
    errors: list[BaseException] = []

    def one_connection() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                reader = sock.makefile("rb")
                for _ in range(requests):
                    sock.sendall(request)
                    status = reader.readline()
                    if b" 200 " not in status:
                        raise RuntimeError(f"expected 200, got {status!r}")
                    length = 0
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    reader.read(length)
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one_connection) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def count(
    argv: Sequence[str],
    port: int,
    *,
    requests: int,
    connections: int,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    path: str = PATH,
) -> float:
    """Instructions per request of the server ``argv`` (listening on ``port``) under callgrind."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as out:
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out",
                *argv,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        try:
            wait_listening(port, proc, timeout=180)  # ~50x slower under valgrind
            drive(port, 20, connections, path)  # warm up: pool, caches, specialisation
            _control("-i", "on", proc.pid)
            drive(port, requests, connections, path)
            _control("-i", "off", proc.pid)
            _control("-d", proc.pid)
            dump = Path(out, "callgrind.out.1")
            deadline = time.monotonic() + 60
            while not (dump.exists() and _TOTALS.search(dump.read_bytes())):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"callgrind wrote no totals to {dump}")
                time.sleep(0.1)
            totals = _TOTALS.search(dump.read_bytes())
            assert totals is not None
            return int(totals.group(1)) / (requests * connections)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _control(*args: object) -> None:
    subprocess.run(
        ["callgrind_control", *map(str, args)], check=True, capture_output=True, timeout=120
    )


def count_gateway(
    echo_port: int, *, requests: int, connections: int, pythonpath: str | None = None
) -> float:
    """Instructions per request of ``ambient gateway`` (tracing sampled off, as in bench.proxy)."""
    launch = gateway_launch(echo_port, pythonpath=pythonpath)
    with launch.workdir:
        return count(
            launch.argv,
            launch.port,
            requests=requests,
            connections=connections,
            env=launch.env,
            cwd=launch.workdir.name,
        )


def require_valgrind() -> None:
    """Exit with the install hint when valgrind is missing."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")


def main(argv: list[str] | None = None) -> None:
    """Count the floor and the gateway, print the table."""
    parser = argparse.ArgumentParser(description="instructions per proxied request (callgrind)")
    parser.add_argument("--requests", type=int, default=300, help="per connection, counted")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    require_valgrind()
    echo = start_echo()
    try:
        port = free_port()
        floor = count(
            floor_argv(port, echo.port),
            port,
            requests=args.requests,
            connections=args.connections,
        )
        gateway = count_gateway(echo.port, requests=args.requests, connections=args.connections)
    finally:
        echo.stop()
    n = args.requests * args.connections
    print(f"\nuser-space instructions per request (callgrind), {n} keep-alive GETs of {PATH}\n")
    header = f"{'proxy':28} {'instructions':>13} {'vs floor':>9}"
    print(header)
    print("-" * len(header))
    for name, value in (("floor: minimal py proxy", floor), ("ambient gateway", gateway)):
        print(f"{name:28} {value:13,.0f} {value / floor:9.2f}")


if __name__ == "__main__":
    main()
