"""Hand-rolled protobuf encoding of the CA messages."""

from __future__ import annotations

import pytest

from mesh.ca import wire


def test_request_round_trip() -> None:
    req = wire.CertificateRequest(
        "CSR", 3600, {wire.IMPERSONATED_IDENTITY: "spiffe://td/ns/a/sa/b"}
    )
    assert wire.CertificateRequest.decode(req.encode()) == req


def test_request_bytes_match_note() -> None:
    # 0x0A len csr, 0x18 varint(ttl)
    assert wire.CertificateRequest("ab", 300).encode() == b"\x0a\x02ab\x18\xac\x02"


def test_response_round_trip() -> None:
    resp = wire.CertificateResponse(("leaf", "root"))
    assert resp.encode() == b"\x0a\x04leaf\x0a\x04root"
    assert wire.CertificateResponse.decode(resp.encode()) == resp


def test_matches_protobuf_runtime() -> None:
    struct_pb2 = pytest.importorskip("google.protobuf.struct_pb2")
    s = struct_pb2.Struct()
    s.update({wire.IMPERSONATED_IDENTITY: "spiffe://td/ns/a/sa/b"})
    ours = wire.CertificateRequest("x", 0, {wire.IMPERSONATED_IDENTITY: "spiffe://td/ns/a/sa/b"})
    # field 4 of the request is exactly a serialized Struct
    assert (
        ours.encode()
        == b"\x0a\x01x" + b"\x22" + bytes([len(s.SerializeToString())]) + s.SerializeToString()
    )


def test_truncated_input_raises() -> None:
    from mesh.errors import CAError

    with pytest.raises(CAError):
        wire.CertificateRequest.decode(b"\x0a\x10short")
