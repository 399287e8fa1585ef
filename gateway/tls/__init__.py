"""TLS termination material: validated certificates and per-port server contexts chosen by SNI."""
