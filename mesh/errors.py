"""Typed errors for the mesh package."""

from __future__ import annotations


class MeshError(Exception):
    """Base class for every error raised by ``mesh``."""


class IdentityError(MeshError):
    """A SPIFFE id or certificate does not satisfy the SVID profile."""


class CAError(MeshError):
    """The certificate authority could not issue or the client could not obtain a certificate."""


class ConfigError(MeshError):
    """mesh.yaml is invalid; the message names the object and the field."""


class HboneError(MeshError):
    """An HBONE tunnel could not be established or broke."""


class HboneProtocolError(HboneError):
    """The peer violated the HBONE protocol; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class TunnelRefused(HboneError):
    """The remote ztunnel answered the CONNECT with a non-200 status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HBONE CONNECT refused with status {status}")
        self.status = status


class Http2Error(HboneError):
    """The peer broke HTTP/2 on an HBONE connection; ``code`` is the GOAWAY error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamClosedError(HboneError):
    """Data was sent on an HBONE stream that is already closed for sending."""
