"""Endpoint choice: which endpoint each try goes to, awaited when the backend's pick is.

Every try asks the backend: ``pick(request, tried)`` returns an :class:`Endpoint`, a
:class:`Pick` (an endpoint plus state the backend gets back in the try's outcome), None (no ready
endpoint: 503), or an awaitable of one of these (an endpoint picker that asks a remote service,
or waits for capacity). An awaited pick runs as a task the exchange holds in ``waiting``; the
client leaving, an HTTP/2 stream reset, the request timeout, the idle timeout and a draining
listener all cancel it.

Retries follow the rule's HTTPRoute ``retry`` (a tenacity schedule, see ``gateway.proxy.retry``):
a retryable status or a failed try before any response byte reached the client starts another
try, after the backoff, at an endpoint not tried yet when the backend has one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING

from gateway.backends.base import Endpoint, Pick, PickRefused
from gateway.proxy.states import WAITING
from gateway.proxy.upstream_attempt import start_try
from gateway.request import error_response

if TYPE_CHECKING:
    from gateway.backends.base import PickResult
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.retry import RetrySchedule

log = logging.getLogger(__name__)


class Retries:
    """A retried request's schedule and its backoff timer."""

    __slots__ = ("codes", "handle", "lost_replay", "schedule")

    def __init__(self, schedule: RetrySchedule) -> None:
        self.schedule = schedule
        self.codes = schedule.codes
        self.handle: asyncio.TimerHandle | None = None
        self.lost_replay = False  # the body grew past what is kept for replay: no more tries

    def cancel(self) -> None:
        """Drop a pending backoff."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def choose(exchange: Exchange) -> None:
    """Pick an endpoint for the next try and start it (now, or once an awaited pick is done)."""
    backend = exchange.backend
    assert backend is not None
    try:
        result = backend.pick(exchange, exchange.tried)
    except PickRefused as refused:
        refuse(exchange, refused)
        return
    if result.__class__ is Endpoint:
        start_try(exchange, result, None)
        return
    picked(exchange, result)


def refuse(exchange: Exchange, refused: PickRefused) -> None:
    """The backend answered instead of choosing (429 shed, 503 no capacity, ...)."""
    exchange.answer(error_response(refused.status, refused.message), "UH")


def picked(exchange: Exchange, result: object) -> None:
    """Act on what ``pick`` returned when it is not a bare Endpoint."""
    if result is None:
        destination = exchange.backend.destination  # type: ignore[union-attr]
        exchange.answer(
            error_response(
                503, f"no healthy upstream for {destination.namespace}/{destination.service_name}"
            ),
            "UH",
        )
    elif isinstance(result, Endpoint):
        start_try(exchange, result, None)
    elif isinstance(result, Pick):
        start_try(exchange, result.endpoint, result.state)
    elif inspect.isawaitable(result):
        future = asyncio.ensure_future(result)
        exchange.waiting = future
        future.add_done_callback(lambda done: _awaited(exchange, done))
    else:
        raise TypeError(
            f"backend {exchange.backend!r} pick() returned {type(result).__name__}, "
            "expected an Endpoint, a Pick, None or an awaitable of one"
        )


def _awaited(exchange: Exchange, future: asyncio.Future[PickResult]) -> None:
    """An awaited pick finished: start the try, unless the request moved on meanwhile."""
    if exchange.waiting is not future:
        return  # cancelled by whoever ended the request; they answered it
    exchange.waiting = None
    if future.cancelled():
        return
    error = future.exception()
    try:
        if isinstance(error, PickRefused):
            refuse(exchange, error)
        elif error is not None:
            log.warning("request %s: endpoint choice failed: %r", exchange.request_id, error)
            exchange.answer(
                error_response(503, f"endpoint choice failed: {type(error).__name__}: {error}"),
                "UH",
            )
        else:
            picked(exchange, future.result())
    except Exception:
        log.exception("request %s failed after its endpoint choice", exchange.request_id)
        exchange.fail_internal("internal error after choosing an endpoint")


def retry_delay(exchange: Exchange) -> float | None:
    """Seconds before another try when the policy allows one now, else None."""
    retries = exchange.retries
    if retries is None or retries.lost_replay or exchange.state != WAITING:
        return None
    return retries.schedule.delay_after(len(exchange.tried))


def retry_later(exchange: Exchange, delay: float) -> None:
    """Start the next try after ``delay`` seconds."""
    retries = exchange.retries
    assert retries is not None
    retries.handle = exchange.down.loop.call_later(delay, _retry, exchange)


def _retry(exchange: Exchange) -> None:
    retries = exchange.retries
    if retries is not None:
        retries.handle = None
    if exchange.state == WAITING and exchange.attempt is None and exchange.waiting is None:
        try:
            choose(exchange)
        except Exception:
            log.exception("request %s failed choosing an endpoint to retry", exchange.request_id)
            exchange.fail_internal("internal error while retrying the request")
