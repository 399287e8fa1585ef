"""The data path's telemetry: metrics, traces and access log behind one ``start``/``finish``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.tracing import Propagation, Tracer, build_tracer

if TYPE_CHECKING:
    from gateway.observability.record import RequestRecord, Telemetry, TraceContext
    from gateway.request import RequestHead

log = logging.getLogger(__name__)


class GatewayTelemetry:
    """Implements :class:`gateway.observability.record.Telemetry` by composing the three parts.

    ``start(head)`` reads the incoming W3C trace context and returns the context whose
    ``traceparent`` goes upstream; it is the tracer's own method, bound without a wrapper
    because it runs once per request and cannot fail (the SDK call inside is guarded).
    """

    start: Callable[[RequestHead], Propagation]

    def __init__(
        self,
        metrics: IstioMetrics,
        tracer: Tracer | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.metrics = metrics
        # Without a tracer we still propagate W3C trace context; we just never record spans.
        self.tracer = tracer if tracer is not None else Tracer(None)
        self.access_log = access_log
        self.start = self.tracer.start
        self._observe = metrics.observe
        self._finish_span = self.tracer.finish

    def finish(self, trace: TraceContext, record: RequestRecord) -> None:
        """Account a finished request: metrics always, span if sampled, access log if enabled."""
        # Only our own start() makes trace contexts; a cast() call would cost on the hot path.
        trace_: Propagation = trace  # type: ignore[assignment]
        try:
            self._observe(record)
            if trace_.span is not None:
                self._finish_span(trace_, record)
            if self.access_log is not None:
                self.access_log.log(record, trace_.trace_id)
        except Exception:
            log.exception("telemetry finish failed for request %s", record.request_id)

    def close(self) -> None:
        """Flush pending spans (call on shutdown)."""
        self.tracer.shutdown()


def build_telemetry(
    *,
    access_log: bool = False,
    access_log_format: Literal["json", "text"] = "json",
    cluster: str = "unknown",
    env: Mapping[str, str] | None = None,
) -> GatewayTelemetry:
    """Telemetry for one process; build it in each worker after fork (span export uses a thread).

    Tracing is configured by the ``OTEL_*`` variables of ``env`` (the process environment by
    default); ``access_log`` turns on one line per request on the ``gateway.access`` logger.
    """
    tracer = build_tracer(os.environ if env is None else env)
    log_ = AccessLog(access_log_format) if access_log else None
    return GatewayTelemetry(IstioMetrics(cluster=cluster), tracer, log_)


if TYPE_CHECKING:  # mypy proves GatewayTelemetry satisfies the data path's protocol
    _check: type[Telemetry] = GatewayTelemetry
