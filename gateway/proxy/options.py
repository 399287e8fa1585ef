"""Tunables of the data path, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

# The idle timeout is checked this many times per period by one sweeper per listener manager
# (cheaper than a timer per connection); a connection closes after that many quiet checks.
IDLE_TICKS = 4


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Upstream pool limits per endpoint; deliberately high so open streams never queue."""

    max_connections: int = 100_000
    max_idle: int = 1_024
    idle_expiry: float = 60.0


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Timeouts (seconds) and size limits (bytes) of the listeners and the upstream pool."""

    idle_timeout: float = 300.0  # no byte either way for this long closes the connection
    connect_timeout: float = 5.0
    max_header_bytes: int = 64 * 1024  # request line + headers; more answers 431
    max_retry_body: int = 64 * 1024  # larger request bodies are streamed and never retried
    max_pipelined: int = 64  # queued requests per connection before reading pauses
    max_buffered_body: int = 1024 * 1024  # request bytes held before reading pauses
    # The largest request body a stage or backend that reads whole bodies accepts (else 413).
    max_request_body: int = 4 * 1024 * 1024
    pool: PoolLimits = field(default_factory=PoolLimits)
