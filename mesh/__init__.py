"""The bundled ztunnel: SPIFFE identities, a small CA, HBONE mTLS tunnels and L4 authorization."""
