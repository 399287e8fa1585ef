"""``ambient sim`` as a process: replicas on consecutive addresses, a clean exit, bad flags."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx

AMBIENT = [sys.executable, "-m", "gateway.cli", "sim"]


def test_ambient_sim_serves_replicas_reports_their_addresses_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [*AMBIENT, "--listen", "127.0.0.2:0", "--replicas", "2", "--lora", "sql-v1,sql-v2",
         "--time-scale", "0.01", "--seed", "7"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        urls = []
        for line in proc.stderr:
            found = re.search(r"replica (\d) serving llama-3-8b on (http://\S+)", line)
            if found:
                urls.append(found.group(2))
            if len(urls) == 2:
                break
        assert re.fullmatch(r"http://127\.0\.0\.2:\d+", urls[0])
        assert urls[1] == urls[0].replace("127.0.0.2", "127.0.0.3")
        for url in urls:
            models = httpx.get(f"{url}/v1/models", timeout=5).json()["data"]
            assert [m["id"] for m in models] == ["llama-3-8b", "sql-v1", "sql-v2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_a_bad_setting_exits_2_naming_it() -> None:
    done = subprocess.run(
        [*AMBIENT, "--error-rate", "1.5"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "ambient sim: error_rate: must be a fraction in [0, 1], got 1.5" in done.stderr


def test_too_many_replicas_for_the_address_space_exit_2() -> None:
    done = subprocess.run(
        [*AMBIENT, "--listen", "255.255.255.254:0", "--replicas", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "host: 255.255.255.254 plus 2 runs past 255.255.255.255" in done.stderr


def test_an_address_that_cannot_be_bound_exits_1_naming_it() -> None:
    # 127.255.255.255 + 1 leaves the loopback network: no interface has 128.0.0.0.
    done = subprocess.run(
        [*AMBIENT, "--listen", "127.255.255.255:0", "--replicas", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "ambient sim:" in done.stderr and "128.0.0.0" in done.stderr
