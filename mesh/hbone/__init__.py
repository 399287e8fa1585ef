"""HBONE: HTTP/2 CONNECT tunnels over mutual TLS (sans-IO core, asyncio transport, client pool)."""
