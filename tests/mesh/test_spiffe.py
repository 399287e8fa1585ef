"""SPIFFE id parsing and formatting."""

from __future__ import annotations

import pytest

from mesh.errors import IdentityError
from mesh.identity import SpiffeId


def test_round_trip() -> None:
    ident = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")
    assert ident == SpiffeId("cluster.local", "default", "sleep")
    assert ident.uri == "spiffe://cluster.local/ns/default/sa/sleep"
    assert ident.principal == "cluster.local/ns/default/sa/sleep"
    assert str(ident) == ident.uri


@pytest.mark.parametrize(
    "uri",
    [
        "cluster.local/ns/default/sa/sleep",
        "spiffe://cluster.local/ns/default/sa",
        "spiffe://cluster.local/ns/default/sa/sleep/extra",
        "spiffe://cluster.local/namespace/default/sa/sleep",
        "spiffe://cluster.local/ns/default/serviceaccount/sleep",
        "spiffe://cluster.local/ns//sa/sleep",
        "spiffe:///ns/default/sa/sleep",
        "spiffe://Cluster.Local/ns/default/sa/sleep",
        "spiffe://cluster.local/ns/../sa/sleep",
        "https://cluster.local/ns/default/sa/sleep",
    ],
)
def test_rejects_malformed(uri: str) -> None:
    with pytest.raises(IdentityError):
        SpiffeId.parse(uri)
