"""What ``ambient --version`` and ``--help`` tell a user: the version, each option's default,
plain text (no reStructuredText markup from docstrings)."""

from __future__ import annotations

from importlib import metadata

import pytest

from gateway.cli import build_parser, main
from gateway.plugins import load_plugins


@pytest.mark.usefixtures("plugin_sandbox")  # main() loads the plugins: not for other tests
def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"ambient {metadata.version('ambient-gateway')}"


@pytest.mark.usefixtures("plugin_sandbox")
def test_every_commands_help_is_plain_and_shows_defaults() -> None:
    load_plugins()
    parser, handlers = build_parser()
    assert "``" not in parser.format_help()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    assert set(subparsers) == set(handlers)
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert "``" not in text and ":class:" not in text, name
        assert "(default: None)" not in text and "(default: False)" not in text, name
    gateway = " ".join(subparsers["gateway"].format_help().split())  # unwrapped
    assert "(default: 127.0.0.1:15000)" in gateway and "(default: 1)" in gateway
