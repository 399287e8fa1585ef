"""``ambient gateway`` size flags: Kubernetes-style suffixes, and clear errors for the rest."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli import _byte_size, build_parser


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("4Mi", 4 << 20), ("512Ki", 512 << 10), ("2M", 2_000_000), ("1Gi", 1 << 30)],
)
def test_sizes_read_as_kubernetes_quantities(text: str, size: int) -> None:
    assert _byte_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5", "4X", "Mi", "1.5Mi", "4 Mi"])
def test_a_bad_size_names_itself(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a size in bytes"):
        _byte_size(text)


def test_the_body_cap_defaults_to_4_mib_and_is_set_by_flag() -> None:
    parser, _ = build_parser()
    assert parser.parse_args(["gateway", "-f", "x.yaml"]).max_request_body == 4 << 20
    flagged = parser.parse_args(["gateway", "-f", "x.yaml", "--max-request-body", "64Ki"])
    assert flagged.max_request_body == 64 << 10


def test_the_header_timeout_defaults_to_60_s_and_is_set_by_flag() -> None:
    parser, _ = build_parser()
    assert parser.parse_args(["gateway", "-f", "x.yaml"]).header_timeout == 60.0
    flagged = parser.parse_args(["gateway", "-f", "x.yaml", "--header-timeout", "7.5"])
    assert flagged.header_timeout == 7.5
