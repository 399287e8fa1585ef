"""``ambient demo`` starts, tours the bundled config and exits cleanly."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.gateway_process import free_port


def test_demo_runs_its_tour() -> None:
    port, admin = free_port(), free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--port",
            str(port),
            "--admin",
            f"127.0.0.1:{admin}",
            "--duration",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "split 80/20" in result.stdout
    assert "echo-v1" in result.stdout and "echo-v2" in result.stdout
    assert "301" in result.stdout and "/new" in result.stdout
    assert "SSE: 5 events" in result.stdout
    # LLM traffic through the InferencePool: each team's conversation stays on one server.
    assert "LLM: 12 chat completions streamed through InferencePool default/llm" in result.stdout
    teams = [line for line in result.stdout.splitlines() if line.strip().startswith("team ")]
    assert len(teams) == 3 and all(line.endswith(" x4") for line in teams), teams
    assert "a sheddable request (objective 'batch') while the pool is not saturated: 200" in (
        result.stdout
    )
