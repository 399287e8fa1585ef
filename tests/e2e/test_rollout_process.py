"""``ambient gateway`` processes running an InferenceRollout: the controller in the admin process
gathers both workers' measurements and pushes weights to both (and to a worker that restarts),
its metrics appear once, feedback reaches the worker that answered, ``ambient rollout`` steers
it, ``--state-dir`` resumes it after a restart, and a reload that changes its spec restarts the
analysis only.

Samples come from ``tests.fixtures.rollout_stub_plugin``: synthetic, exact numbers handed to the
rewrite state's observers in each worker (``test_rollout_canary`` runs model servers instead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.rollout import config, rollout_doc

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AMBIENT_PLUGINS": "tests.fixtures.rollout_stub_plugin", "PYTHONPATH": str(ROOT)}
ROLLOUT = "/plugins/rollouts/llama-canary"


def status(gw: GatewayProcess) -> dict[str, Any]:
    response = httpx.get(gw.admin + ROLLOUT, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def batch(version: str, count: int = 10, ttft: float = 0.1) -> dict[str, Any]:
    """``count`` answers of ``version`` with TTFT ``ttft`` (per serving process)."""
    return {"version": version, "count": count, "ttft": ttft}


def emit(gw: GatewayProcess, *batches: dict[str, Any]) -> list[str]:
    """Every serving process delivers the batches at once; the samples' request ids."""
    body = list(batches)
    response = httpx.post(f"{gw.admin}/plugins/stub/emit", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json())


def until(
    gw: GatewayProcess,
    done: Callable[[dict[str, Any]], bool],
    traffic: Callable[[], object] = lambda: None,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Send ``traffic``, poll the rollout's status until ``done``; after a second without it,
    send ``traffic`` again. One batch is judged in one interval at most: at most one step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        traffic()
        again = time.monotonic() + 1.0
        while time.monotonic() < min(again, deadline):
            current = status(gw)
            if done(current):
                return current
            time.sleep(0.05)
    raise AssertionError(f"rollout never got there; last: {current}\n{gw.output()[-3000:]}")


def applied(gw: GatewayProcess) -> list[dict[str, Any]]:
    """Each serving process's pid and applied weights."""
    return list(httpx.get(f"{gw.admin}/plugins/rollout-weights", timeout=10).json()["workers"])


def traffic(gw: GatewayProcess, canary_ttft: float = 0.1) -> Callable[[], None]:
    """One interval's worth of answers of both versions."""
    return lambda: emit(gw, batch("llama-v1"), batch("llama-v2", ttft=canary_ttft))


def test_two_workers_measure_together_get_every_weight_and_roll_back_a_slow_canary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(config(rollout_doc(stepWeight=25, minRequests=15), port=free_port()))
    gw = GatewayProcess([path], "--workers", "2", env=ENV)
    try:
        gw.wait_ready(timeout=30)
        until(gw, lambda s: s["step"] == 1)
        rules = [{"rewrite": "default/llama-versions", "model": "llama",
                  "weights": {"llama-v1": 75, "llama-v2": 25}, "mirror": None}]  # fmt: skip
        views = applied(gw)
        assert len({v["pid"] for v in views}) == 2 and all(v["rules"] == rules for v in views)

        # 10 samples per version per worker: only the two workers together reach minRequests 15.
        now = until(gw, lambda s: s["weight"] == 50, traffic(gw))
        judged = [h for h in now["history"] if h["checks"]][-1]
        assert all(c["verdict"] == "pass" for c in judged["checks"])

        metrics = httpx.get(f"{gw.admin}/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        weights = {s.labels["version"]: s.value for s in families["ambient_rollout_weight"].samples}
        assert weights == {"llama-v1": 50.0, "llama-v2": 50.0}  # once, not once per worker
        phases = {
            s.labels["phase"]: s.value
            for s in families["ambient_rollout_phase"].samples
            if s.labels["rollout"] == "default/llama-canary"
        }
        assert phases["Progressing"] == 1.0 and sum(phases.values()) == 1.0

        victim = views[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            views = applied(gw)
            if len(views) == 2 and victim not in {v["pid"] for v in views}:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the killed worker was not replaced")
        half = [{**rules[0], "weights": {"llama-v1": 50, "llama-v2": 50}}]
        assert all(v["rules"] == half for v in views), views  # the new worker got them at start

        slow = traffic(gw, canary_ttft=0.14)  # +40%: over maxRatio 1.2
        failed = until(gw, lambda s: s["phase"] == "Failed", slow)
        assert (failed["weight"], failed["failures"]) == (0, 2)
        assert all(
            v["rules"] == [{**rules[0], "weights": {"llama-v1": 100, "llama-v2": 0}}]
            for v in applied(gw)
        )
        assert "rollout default/llama-canary: rolled-back: rolled back after 2 failed checks" in (
            gw.output()
        )
    finally:
        gw.stop()


def test_feedback_is_counted_by_the_worker_that_answered_and_bad_input_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(config(port=free_port()))
    gw = GatewayProcess([path], "--workers", "2", env=ENV)
    try:
        gw.wait_ready(timeout=30)
        ids = emit(gw, batch("llama-v2", 1))
        assert len(ids) == 2  # one per worker
        url = f"{gw.admin}/plugins/feedback"
        for request_id in ids:
            ok = httpx.post(url, json={"requestId": request_id, "score": 0.75}, timeout=10)
            assert ok.status_code == 200, ok.text
        by_header = httpx.post(url, json={"score": 1}, headers={"x-request-id": ids[0]})
        assert by_header.status_code == 200
        unknown = httpx.post(url, json={"requestId": "nobody-1", "score": 0.5}, timeout=10)
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "requestId 'nobody-1': no rewritten answer with this id"
        high = httpx.post(url, json={"requestId": ids[0], "score": 1.5}, timeout=10)
        assert high.status_code == 400 and high.json()["error"] == "score: 1.5 is outside [0, 1]"
        word = httpx.post(url, json={"requestId": ids[0], "score": "good"}, timeout=10)
        assert word.status_code == 400 and "score: expected a number" in word.json()["error"]
        bad = httpx.post(url, content=b"{", timeout=10)
        assert bad.status_code == 400 and bad.json()["error"].startswith("body: not JSON")
    finally:
        gw.stop()


def ambient(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )


def test_cli_steers_the_rollout_and_a_restart_resumes_at_the_recorded_step(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(config(rollout_doc(stepWeight=20, maxWeight=60), port=free_port()))
    state = tmp_path / "state"
    gw = GatewayProcess([path], "--state-dir", str(state), env=ENV)
    try:
        gw.wait_ready()
        until(gw, lambda s: s["weight"] == 40, traffic(gw))
        admin = f"127.0.0.1:{gw.admin_port}"
        paused = ambient("rollout", "pause", "llama-canary", "--admin", admin)
        assert paused.returncode == 0, paused.stderr
        assert "default/llama-canary: Paused, step 2/3, canary llama-v2 40%" in paused.stdout
        shown = ambient("rollout", "status", "llama-canary", "--admin", admin)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("default/llama-canary: Paused, step 2/3")
        header = next(line for line in lines if "METRIC" in line).split()
        assert header == ["METRIC", "STABLE", "CANARY", "VALUE", "LIMIT", "VERDICT"]
        ttft = next(line for line in lines if line.strip().startswith("ttft-p90")).split()
        last = [h for h in status(gw)["history"] if h["checks"]][-1]["checks"][0]
        assert last["metric"] == "ttft-p90" and ttft[-1] == last["verdict"]
        assert ttft[1:4] == [
            "-" if last[k] is None else f"{last[k]:.4g}" for k in ("stable", "canary", "value")
        ]
        page = httpx.get(f"{gw.admin}/ui/rollouts", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "llama-canary" in page.text and "Paused" in page.text
        missing = ambient("rollout", "status", "nope", "--admin", admin)
        assert missing.returncode == 1 and "no rollout 'nope'" in missing.stderr
        wrong = ambient("rollout", "resume", "nope", "--admin", admin)
        assert wrong.returncode == 1 and "no rollout 'nope'" in wrong.stderr
    finally:
        gw.stop()

    again = GatewayProcess([path], "--state-dir", str(state), env=ENV)
    try:
        again.wait_ready()
        first = status(again)  # the first answer after ready: never 0% nor 100%
        assert (first["phase"], first["step"], first["weight"]) == ("Paused", 2, 40)
        (view,) = applied(again)
        assert view["rules"][0]["weights"] == {"llama-v1": 60, "llama-v2": 40}
        admin = f"127.0.0.1:{again.admin_port}"
        resumed = ambient("rollout", "resume", "default/llama-canary", "--admin", admin)
        assert resumed.returncode == 0, resumed.stderr
        done = until(again, lambda s: s["phase"] == "Succeeded", traffic(again))
        assert (done["weight"], done["step"]) == (100, 4)
        assert applied(again)[0]["rules"][0]["weights"] == {"llama-v1": 0, "llama-v2": 100}
    finally:
        again.stop()


def test_a_reload_that_changes_the_spec_restarts_the_analysis_not_the_weight(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(config(rollout_doc(threshold=3), port=port))
    gw = GatewayProcess([path], "--log-format", "json", env=ENV)
    try:
        gw.wait_ready()
        until(gw, lambda s: s["weight"] == 20, traffic(gw))

        failing = until(gw, lambda s: s["failures"] >= 1, traffic(gw, canary_ttft=0.2))
        assert failing["phase"] == "Progressing"
        weight = failing["weight"]
        path.write_text(config(rollout_doc(threshold=4), port=port))
        changed = until(gw, lambda s: s["threshold"] == 4)
        assert (changed["weight"], changed["failures"]) == (weight, 0)
        assert changed["message"] == "spec changed: analysis restarted at the current weight"
        events = [
            entry
            for entry in (json.loads(line) for line in gw.output().splitlines() if line[:1] == "{")
            if str(entry.get("event", "")).startswith("rollout.")
        ]
        kinds = [e["event"] for e in events]
        assert kinds[:2] == ["rollout.advanced", "rollout.advanced"]  # 10%, then 20%
        failed = next(e for e in events if e["event"] == "rollout.check-failed")
        assert failed["metric"] == "ttft-p90" and failed["canary"] > failed["stable"] > 0
        assert failed["limit"] == "<= 1.2x stable"
        spec = next(e for e in events if e["event"] == "rollout.spec-changed")
        assert (spec["rollout"], spec["weight"]) == ("default/llama-canary", weight)
    finally:
        gw.stop()
