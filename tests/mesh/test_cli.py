"""The ``ca`` and ``ztunnel`` subcommands parse the flags from the issue."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mesh.cli import add_subcommands
from mesh.ztunnel.outbound import Forward


def parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    p = argparse.ArgumentParser(prog="ambient")
    commands = add_subcommands(p.add_subparsers(dest="command", required=True))
    return p, commands  # type: ignore[return-value]


def test_commands_registered() -> None:
    _, commands = parser()
    assert set(commands) == {"ca", "ztunnel"}


def test_issue_command_lines() -> None:
    p, _ = parser()
    ca = p.parse_args(["ca", "--trust-domain", "cluster.local", "--state-dir", "./ca"])
    assert ca.trust_domain == "cluster.local" and ca.state_dir == Path("ca")
    assert ca.listen == "127.0.0.1:15012"
    zt = p.parse_args(
        ["ztunnel", "--node", "node-a", "-f", "mesh.yaml", "--ca", "127.0.0.1:15012",
         "--forward", "8080=echo.default:80"]
    )  # fmt: skip
    assert zt.node == "node-a" and zt.file == Path("mesh.yaml") and zt.hbone_port == 15008
    assert [Forward.parse(f) for f in zt.forward] == [Forward(8080, "echo", "default", 80)]


def test_forward_parse_errors() -> None:
    from mesh.errors import ConfigError

    for bad in ("8080", "x=echo.default:80", "8080=echo:80", "8080=echo.default"):
        with pytest.raises(ConfigError, match=r"LOCALPORT=svc\.ns:port"):
            Forward.parse(bad)
    assert Forward.parse("1=echo.default.svc.cluster.local:80").namespace == "default"


def test_in_pod_capture_is_for_cluster_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from mesh.cli import main

    p, _ = parser()
    zt = p.parse_args(["ztunnel", "--node", "node-a", "--in-cluster", "--in-pod-capture"])
    assert zt.in_pod_capture and zt.in_pod_capture_port == 15001
    assert main(["ztunnel", "--node", "node-a", "-f", "mesh.yaml", "--in-pod-capture"]) == 2
    assert "--in-pod-capture is for cluster mode" in capsys.readouterr().err
