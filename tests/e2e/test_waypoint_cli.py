"""``ambient gateway --node``: a misconfiguration stops it with one line naming the problem."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.waypoint_mesh import WAYPOINT_IP, mesh_docs


def run(
    directory: Path, docs: list[dict[str, Any]], *flags: str
) -> subprocess.CompletedProcess[str]:
    (directory / "mesh.yaml").write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "-f", "mesh.yaml", "--admin", "off",
         *flags],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_waypoint_mode_without_a_waypoint_gateway_says_what_is_missing(tmp_path: Path) -> None:
    docs = [d for d in mesh_docs(8080) if d["kind"] != "Gateway"]
    result = run(tmp_path, docs, "--node", "node-a")
    assert result.returncode == 1
    assert "gatewayClassName: istio-waypoint" in result.stderr


def test_a_node_without_the_waypoint_pod_is_named(tmp_path: Path) -> None:
    result = run(tmp_path, mesh_docs(8080), "--node", "node-b")
    assert result.returncode == 1
    assert "no Pod of waypoint default/waypoint runs on node node-b" in result.stderr


def test_an_unknown_waypoint_name_is_named(tmp_path: Path) -> None:
    result = run(tmp_path, mesh_docs(8080), "--node", "node-a", "--waypoint", "default/nope")
    assert result.returncode == 1
    assert "--waypoint default/nope" in result.stderr


def test_waypoint_mode_runs_one_worker(tmp_path: Path) -> None:
    result = run(tmp_path, mesh_docs(8080), "--node", "node-a", "--workers", "2")
    assert result.returncode == 2
    assert "waypoint mode (--node) runs one worker" in result.stderr


def test_missing_ca_credentials_are_named(tmp_path: Path) -> None:
    result = run(tmp_path, mesh_docs(8080), "--node", "node-a", "--ca-root", "nowhere/root.pem")
    assert result.returncode == 1
    assert "cannot read CA credentials" in result.stderr


def test_a_taken_hbone_port_names_the_flag(tmp_path: Path) -> None:
    (tmp_path / "ca" / "tokens").mkdir(parents=True)
    (tmp_path / "ca" / "root-cert.pem").write_text("")
    (tmp_path / "ca" / "tokens" / "node-a.token").write_text("token")
    with socket.socket() as taken:
        taken.bind((WAYPOINT_IP, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, mesh_docs(8080), "--node", "node-a", "--hbone-port", str(port))
    assert result.returncode == 1
    assert f"--hbone-port {port}" in result.stderr


def test_another_trust_domain_is_refused_by_name(tmp_path: Path) -> None:
    result = run(tmp_path, mesh_docs(8080), "--node", "node-a", "--trust-domain", "example.org")
    assert result.returncode == 1
    assert "--trust-domain example.org" in result.stderr
