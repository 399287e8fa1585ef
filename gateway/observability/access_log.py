"""The optional access log: one line per finished request through ``logging``, JSON or text."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from gateway.observability.record import RequestRecord

ACCESS_LOGGER = "gateway.access"
# The fields every line has; others (added by backends, stages and taps) follow them.
_CORE = frozenset(
    {
        "time", "method", "authority", "path", "protocol", "status", "duration_ms",
        "request_bytes", "response_bytes", "upstream", "destination", "route", "client_ip",
        "request_id", "trace_id", "response_flags", "upstream_failure",
    }
)  # fmt: skip


def _timestamp(now: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-26T05:31:18.123Z``."""
    seconds = int(now)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int((now - seconds) * 1000):03d}Z"
    )


def access_fields(record: RequestRecord, trace_id: str, now: float) -> dict[str, Any]:
    """The fields of one access-log entry."""
    head = record.head
    rule = record.rule
    end = record.end or time.perf_counter()
    route = None
    if rule is not None:
        ref = rule.ref
        route = f"{ref.namespace}/{ref.name}/{ref.rule_name or ref.rule_index}"
    fields = {
        "time": _timestamp(now),
        "method": head.method,
        "authority": head.authority,
        "path": head.path,
        "protocol": record.protocol,
        "status": record.status,
        "duration_ms": round((end - record.start) * 1000.0, 3),
        "request_bytes": record.request_bytes,
        "response_bytes": record.response_bytes,
        "upstream": str(record.endpoint) if record.endpoint is not None else None,
        # The backend's destination (Envoy's upstream cluster): also set when no endpoint was
        # chosen, e.g. for an in-gateway responder or a request refused before a try.
        "destination": record.backend.destination.host if record.backend is not None else None,
        "route": route,
        "client_ip": head.client_ip or None,
        "request_id": record.request_id,
        "trace_id": trace_id or None,
        "response_flags": record.response_flags,
        "upstream_failure": record.upstream_failure or None,
    }
    if record.attributes:
        fields.update(record.attributes)  # what a backend, stage or tap added
    return fields


class AccessLog:
    """Writes one line per request to the ``gateway.access`` logger (INFO), as JSON or text.

    Without an explicit ``logger``, the ``gateway.access`` logger gets its own stdout handler
    that writes the bare line (as Envoy writes its access log to /dev/stdout), unless it was
    configured already; it does not propagate, so a JSON root formatter never double-encodes it.
    """

    def __init__(
        self, fmt: Literal["json", "text"] = "json", logger: logging.Logger | None = None
    ) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"access log format must be 'json' or 'text', not {fmt!r}")
        self.fmt = fmt
        if logger is None:
            logger = logging.getLogger(ACCESS_LOGGER)
            if not logger.handlers:
                handler = logging.StreamHandler(sys.stdout)
                handler.setFormatter(logging.Formatter("%(message)s"))
                logger.addHandler(handler)
                logger.setLevel(logging.INFO)
                logger.propagate = False
        self.logger = logger

    def log(self, record: RequestRecord, trace_id: str = "") -> None:
        """Emit the line for ``record`` if the logger is enabled for INFO."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        fields = access_fields(record, trace_id, time.time())
        logger.info(self.format(fields))

    def format(self, fields: dict[str, Any]) -> str:
        """One line: compact JSON, or an Envoy-like text line."""
        if self.fmt == "json":
            return orjson.dumps(fields).decode()
        f = {k: ("-" if v is None else v) for k, v in fields.items()}
        return (
            f'[{f["time"]}] "{f["method"]} {f["path"]} HTTP/1.1" '
            f"{f['status']} {f['response_flags']} "
            f"{f['request_bytes']} {f['response_bytes']} {f['duration_ms']}ms "
            f'"{f["authority"]}" "{f["upstream"]}" route={f["route"]} '
            f"destination={f['destination']} "
            f"request_id={f['request_id']} trace_id={f['trace_id']} client={f['client_ip']} "
            f"upstream_failure={f['upstream_failure']}"
        ) + "".join(f" {key}={value}" for key, value in fields.items() if key not in _CORE)
