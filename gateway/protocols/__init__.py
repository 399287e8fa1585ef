"""Sans-IO protocol cores: bytes in, events out, no sockets."""
