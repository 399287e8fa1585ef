"""Fixtures for end-to-end tests that run ``ambient`` as a user would, in subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.echo_process import EchoProcess


@pytest.fixture(scope="module")
def echo_a() -> Iterator[EchoProcess]:
    echo = EchoProcess("backend-a")
    yield echo
    echo.stop()


@pytest.fixture(scope="module")
def echo_b() -> Iterator[EchoProcess]:
    echo = EchoProcess("backend-b")
    yield echo
    echo.stop()
