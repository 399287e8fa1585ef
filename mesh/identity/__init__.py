"""SPIFFE identities and the X.509-SVID certificate profile."""

from mesh.identity.spiffe import Identity, NodeId, SpiffeId, parse_identity

__all__ = ["Identity", "NodeId", "SpiffeId", "parse_identity"]
