"""SPIFFE identities and the X.509-SVID certificate profile."""

from mesh.identity.spiffe import SpiffeId

__all__ = ["SpiffeId"]
