"""Tunables of the data path, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

# The idle and header timeouts are each checked this many times per period by a sweeper per
# listener manager (cheaper than a timer per connection or request); a connection closes after
# that many checks that found it quiet (or its head unfinished).
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
    # A request head (or a new connection's first one, or HTTP/2's preface and SETTINGS) not
    # complete this long after it began is cut: 408 (nginx's client_header_timeout).
    header_timeout: float = 60.0
    connect_timeout: float = 5.0
    max_header_bytes: int = 64 * 1024  # request line + headers; more answers 431
    max_retry_body: int = 64 * 1024  # larger request bodies are streamed and never retried
    max_pipelined: int = 64  # queued requests per connection before reading pauses
    max_buffered_body: int = 1024 * 1024  # request bytes held before reading pauses
    # Response bytes held for HTTP/2 clients with no window left: per stream the same
    # max_buffered_body, per connection this, per process the second; past them the upstream
    # read pauses until the client's WINDOW_UPDATE makes room.
    max_buffered_per_connection: int = 1024 * 1024
    max_buffered_total: int = 64 * 1024 * 1024
    # The largest request body a stage or backend that reads whole bodies accepts (else 413).
    max_request_body: int = 4 * 1024 * 1024
    pool: PoolLimits = field(default_factory=PoolLimits)
