"""Hand-rolled protobuf encoding of the CA messages (see ca.proto): no protobuf runtime needed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mesh.errors import CAError

CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
GET_TRUST_BUNDLE = "/istio.v1.auth.TrustBundleService/GetTrustBundle"
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
CA_HOSTNAME = "istiod.istio-system.svc"

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CAError("truncated or overlong varint in protobuf message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise CAError("truncated length-delimited protobuf field")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            yield number, wire, data[pos : pos + width]
            pos += width
        else:
            raise CAError(f"unsupported protobuf wire type {wire}")


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """IstioCertificateRequest."""

    csr: str
    validity_duration: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Serialize to protobuf bytes."""
        out = _len_field(1, self.csr.encode())
        if self.validity_duration:
            out += _varint(3 << 3 | _VARINT) + _varint(self.validity_duration)
        if self.metadata:
            struct = b""
            for key, value in self.metadata.items():
                pb_value = _len_field(3, value.encode())
                struct += _len_field(1, _len_field(1, key.encode()) + _len_field(2, pb_value))
            out += _len_field(4, struct)
        return out

    @classmethod
    def decode(cls, data: bytes) -> CertificateRequest:
        """Parse protobuf bytes; string-valued metadata entries are kept."""
        csr, ttl, meta = "", 0, {}
        for number, wire, value in _fields(data):
            if number == 1 and isinstance(value, bytes):
                csr = value.decode()
            elif number == 3 and wire == _VARINT and isinstance(value, int):
                ttl = _signed64(value)
            elif number == 4 and isinstance(value, bytes):
                meta.update(_decode_struct(value))
        return cls(csr, ttl, meta)


def _decode_struct(data: bytes) -> dict[str, str]:
    out = {}
    for number, _, entry in _fields(data):
        if number != 1 or not isinstance(entry, bytes):
            continue
        key, text = "", None
        for n, _, v in _fields(entry):
            if n == 1 and isinstance(v, bytes):
                key = v.decode()
            elif n == 2 and isinstance(v, bytes):
                for vn, _, vv in _fields(v):
                    if vn == 3 and isinstance(vv, bytes):
                        text = vv.decode()
        if text is not None:
            out[key] = text
    return out


@dataclass(frozen=True, slots=True)
class CertificateResponse:
    """IstioCertificateResponse: leaf first, root last."""

    cert_chain: tuple[str, ...]

    def encode(self) -> bytes:
        """Serialize to protobuf bytes."""
        return b"".join(_len_field(1, pem.encode()) for pem in self.cert_chain)

    @classmethod
    def decode(cls, data: bytes) -> CertificateResponse:
        """Parse protobuf bytes."""
        return cls(
            tuple(v.decode() for n, _, v in _fields(data) if n == 1 and isinstance(v, bytes))
        )


@dataclass(frozen=True, slots=True)
class TrustBundleResponse:
    """Root certificates of the trust domain."""

    root_certs: tuple[str, ...]

    def encode(self) -> bytes:
        """Serialize to protobuf bytes."""
        return b"".join(_len_field(1, pem.encode()) for pem in self.root_certs)

    @classmethod
    def decode(cls, data: bytes) -> TrustBundleResponse:
        """Parse protobuf bytes."""
        return cls(
            tuple(v.decode() for n, _, v in _fields(data) if n == 1 and isinstance(v, bytes))
        )
