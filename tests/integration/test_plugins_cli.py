"""Plugins in real processes: AMBIENT_PLUGINS, an installed entry point, failures, commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.gateway_process import free_port
from tests.fixtures.plugin import plugin_config_yaml

ROOT = Path(__file__).resolve().parents[2]


def ambient(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "AMBIENT_PLUGINS"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.pop("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**environment, **env},
    )


def rows(output: str) -> set[str]:
    """``ambient check``'s table with runs of spaces collapsed."""
    return {" ".join(line.split()) for line in output.splitlines()}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(plugin_config_yaml(free_port(), free_port()))
    return path


def install_entry_point(site: Path, name: str, reference: str) -> None:
    """A distribution with one ``ambient.plugins`` entry point, as pip would leave it."""
    info = site / f"ambient_{name}_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: ambient-{name}-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[ambient.plugins]\n{name} = {reference}\n")


def test_check_with_a_plugin_from_the_environment(config: Path) -> None:
    result = ambient("check", "-f", str(config), env={"AMBIENT_PLUGINS": "tests.fixtures.plugin"})
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert "ModelHeader default/model default/gw Accepted=True(Accepted)" in table
    # The route's backendRef resolved through the plugin's backend kind and typed resource.
    assert (
        "HTTPRoute default/r default/gw Accepted=True(Accepted) ResolvedRefs=True(ResolvedRefs)"
        in table
    )
    assert "loaded plugin 'tests.fixtures.plugin' (AMBIENT_PLUGINS)" in result.stderr


def test_without_the_plugin_its_kinds_are_unknown(config: Path) -> None:
    result = ambient("check", "-f", str(config), env={})
    assert result.returncode == 1
    assert "ResolvedRefs=False(InvalidKind)" in result.stdout
    assert "ModelHeader" not in result.stdout  # no stage kind, no policy status


def test_plugin_found_through_an_installed_entry_point(config: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_entry_point(site, "testing", "tests.fixtures.plugin:register")
    result = ambient("check", "-f", str(config), env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert "ModelHeader default/model default/gw Accepted=True(Accepted)" in rows(result.stdout)
    assert (
        "loaded plugin 'testing' "
        "(entry point ambient.plugins: testing = tests.fixtures.plugin:register)"
    ) in result.stderr


def test_a_broken_entry_point_stops_the_process_naming_plugin_and_entry_point(
    config: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    install_entry_point(site, "broken", "tests.fixtures.broken_plugins:fail_register")
    result = ambient("check", "-f", str(config), env={"PYTHONPATH": str(site)})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "ambient: plugin 'broken' (entry point ambient.plugins: broken = "
        "tests.fixtures.broken_plugins:fail_register): register failed: no model server configured"
    )


def test_a_plugin_that_cannot_be_imported_stops_the_gateway(config: Path) -> None:
    result = ambient("gateway", "-f", str(config), env={"AMBIENT_PLUGINS": "no_such.plugin"})
    assert result.returncode == 1
    assert (
        "ambient: plugin 'no_such.plugin' (AMBIENT_PLUGINS): cannot import no_such.plugin: "
        "No module named 'no_such'"
    ) in result.stderr


def test_a_failing_on_start_stops_the_gateway_naming_the_plugin(config: Path) -> None:
    plugins = "tests.fixtures.plugin,tests.fixtures.broken_plugins:fail_start"
    result = ambient(
        "gateway", "-f", str(config), "--admin", "off", env={"AMBIENT_PLUGINS": plugins}
    )
    assert result.returncode == 1
    assert (
        "ambient gateway: plugin 'tests.fixtures.broken_plugins:fail_start': "
        "fail_start.<locals>.start_scraper: on_start failed: cannot reach the metrics endpoint"
    ) in result.stderr


def test_plugin_command_runs_with_its_arguments() -> None:
    env = {"AMBIENT_PLUGINS": "tests.fixtures.plugin"}
    result = ambient("test-hello", "--name", "plugins", env=env)
    assert (result.returncode, result.stdout) == (0, "hello plugins\n")
    help_text = ambient("--help", env=env).stdout
    assert "test-hello" in help_text and "say hello (test plugin)" in help_text
