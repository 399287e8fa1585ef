"""The gateway's side of ext_proc: ask an external endpoint picker (``ambient epp``, GIE's or
llm-d's EPP) which endpoint serves a request, as Envoy does.

One ``grpc.aio`` channel per target, reused; one ``Process`` stream per request, spoken in
FULL_DUPLEX_STREAMED: the request headers (``end_of_stream`` when there is no body), then the body
in chunks; the decision is the request headers response's ``x-gateway-destination-endpoint``
(header mutation, else dynamic metadata ``envoy.lb``). Only endpoints the pool lists are kept:
the gateway never connects where the picker alone says.

:meth:`ExtProcPicker.choose` asks for a decision and ends the stream; :meth:`ExtProcPicker.open`
keeps it open so the picker also learns how the request ended, through :class:`ExtProcCall`
(``response_started``, then ``response_ended``), as Envoy tells it in the response phase.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from gateway.backends.base import Endpoint, PickRefused
from gateway.request import RequestHead
from inference_ext.extproc import keys
from inference_ext.extproc import messages as pb
from inference_ext.extproc.stream import CHUNK

log = logging.getLogger(__name__)

# Connection-specific headers: HTTP/2 (what Envoy speaks to a processor) has none of them.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host"}
)


_DRAINS: set[asyncio.Task[None]] = set()


class ExtProcUnavailable(Exception):
    """The endpoint picker gave no usable answer: a transport error, no decision within the
    timeout, a broken stream, or a decision naming no endpoint of the pool. The caller applies
    the pool's failureMode (FailOpen: its own choice; FailClose: 503)."""


class ExtProcCall:
    """One request's stream after the decision, until the response's end.

    End every call with :meth:`response_ended`, :meth:`close` or :meth:`cancel`: until then the
    picker counts the request as in flight. The methods are synchronous (they queue messages
    the stream sends in order), so a backend's ``done`` or a response tap can call them.
    """

    def __init__(
        self, call: Any, outbox: asyncio.Queue[Any | None], endpoints: list[Endpoint], grace: float
    ) -> None:
        self.endpoints = endpoints  # the pick first, then the fallbacks, all in the pool
        self._call = call
        self._outbox = outbox
        self._grace = grace
        self._started = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._drain = asyncio.get_running_loop().create_task(self._read_to_end())
        _DRAINS.add(self._drain)  # the loop keeps only weak references to tasks
        self._drain.add_done_callback(_DRAINS.discard)

    def response_started(self, status: int, served: Endpoint | None = None) -> None:
        """The response head arrived with ``status``, from ``served`` (when the try that
        answered was not at ``endpoints[0]``, e.g. after a retry)."""
        if self._closed or self._started:
            return
        self._started = True
        message = pb.ProcessingRequest(
            response_headers=pb.HttpHeaders(headers=pb.header_map([(":status", str(status))]))
        )
        if served is not None:
            message.metadata_context.filter_metadata[keys.DESTINATION_NAMESPACE].update(
                {keys.SERVED_ENDPOINT: str(served)}
            )
        self._outbox.put_nowait(message)

    def response_ended(self) -> None:
        """The response reached its end: tell the picker, then end the stream."""
        if self._closed:
            return
        if self._started:
            end = pb.HttpBody(body=b"", end_of_stream=True)
            self._outbox.put_nowait(pb.ProcessingRequest(response_body=end))
        self.close()

    def close(self) -> None:
        """End the stream without (more of) an outcome: the picker stops counting the request."""
        if self._closed:
            return
        self._closed = True
        self._outbox.put_nowait(None)
        # A picker that does not end its side within the grace is cut.
        self._timer = asyncio.get_running_loop().call_later(self._grace, self.cancel)

    def cancel(self) -> None:
        """Abandon the stream (the client left): the picker sees a cancelled request."""
        self._closed = True
        self._call.cancel()

    async def wait_closed(self) -> None:
        """Until the picker's side of the stream ended."""
        await asyncio.shield(self._drain)

    async def _read_to_end(self) -> None:
        # The picker echoes the request body and answers each response message; read them so
        # its writes never stall on flow control.
        try:
            while await self._call.read() is not grpc.aio.EOF:
                pass
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            if self._timer is not None:
                self._timer.cancel()


class ExtProcPicker:
    """An external endpoint picker at ``target`` ("host:port"), asked over ext_proc."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._channel: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._method: Any = None

    async def choose(
        self,
        head: RequestHead,
        body: bytes | None,
        allowed: Mapping[str, Endpoint],
        *,
        request_id: str = "",
    ) -> list[Endpoint]:
        """The endpoints the picker chose for this request, best first, each one of ``allowed``
        ("ip:port" -> Endpoint); then the stream ends. Raises PickRefused (the picker answered
        the request itself) or ExtProcUnavailable."""
        call = await self.open(head, body, allowed, request_id=request_id)
        call.close()
        return call.endpoints

    async def open(
        self,
        head: RequestHead,
        body: bytes | None,
        allowed: Mapping[str, Endpoint],
        *,
        request_id: str = "",
    ) -> ExtProcCall:
        """Like :meth:`choose`, keeping the stream for the response phase (see ExtProcCall).
        Cancelling it (the client left) cancels the gRPC call."""
        outbox: asyncio.Queue[Any | None] = asyncio.Queue()
        for message in _request_messages(head, body, request_id):
            outbox.put_nowait(message)
        call = self._process()(_drain_queue(outbox))
        try:
            async with asyncio.timeout(self.timeout):
                decision = await _read_decision(call)
        except TimeoutError:
            call.cancel()
            raise ExtProcUnavailable(
                f"endpoint picker {self.target}: no decision within {self.timeout:g}s"
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise ExtProcUnavailable(
                f"endpoint picker {self.target}: {exc.code().name}: {exc.details()}"
            ) from None
        except BaseException:
            call.cancel()
            raise
        try:
            endpoints = _allowed_endpoints(decision, allowed, self.target)
        except ExtProcUnavailable:
            call.cancel()
            raise
        return ExtProcCall(call, outbox, endpoints, self.timeout)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _process(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # A grpc.aio channel belongs to the loop that made it.
            self._channel = grpc.aio.insecure_channel(self.target)
            self._loop = loop
            self._method = self._channel.stream_stream(
                pb.PROCESS_METHOD,
                request_serializer=pb.serialize,
                response_deserializer=pb.parse_response,
            )
        return self._method


def _request_messages(head: RequestHead, body: bytes | None, request_id: str) -> list[Any]:
    """The request phase as Envoy sends it: headers (with the protocol configuration), body."""
    headers = [
        (":method", head.method),
        (":scheme", head.scheme),
        (":authority", head.authority),
        (":path", head.target),
    ]
    headers.extend((n.lower(), v) for n, v in head.headers if n.lower() not in _HOP_BY_HOP)
    if request_id and head.get(keys.REQUEST_ID) is None:
        headers.append((keys.REQUEST_ID, request_id))
    first = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=pb.header_map(headers), end_of_stream=not body),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=pb.FULL_DUPLEX_STREAMED, response_body_mode=pb.FULL_DUPLEX_STREAMED
        ),
    )
    messages = [first]
    if body:
        for start in range(0, len(body), CHUNK):
            chunk = pb.HttpBody(
                body=body[start : start + CHUNK], end_of_stream=start + CHUNK >= len(body)
            )
            messages.append(pb.ProcessingRequest(request_body=chunk))
    return messages


async def _drain_queue(outbox: asyncio.Queue[Any | None]) -> AsyncIterator[Any]:
    while (message := await outbox.get()) is not None:
        yield message


async def _read_decision(call: Any) -> Any:
    """The picker's first answer: the request headers response, or PickRefused."""
    response = await call.read()
    if response is grpc.aio.EOF:
        status = await call.code()
        raise ExtProcUnavailable(f"the endpoint picker ended the stream ({status.name}) undecided")
    kind = response.WhichOneof("response")
    if kind == "immediate_response":
        answer = response.immediate_response
        message = answer.body.decode("utf-8", "replace") or answer.details
        raise PickRefused(answer.status.code or 500, message or "refused by the endpoint picker")
    if kind != "request_headers":
        raise ExtProcUnavailable(f"the endpoint picker answered {kind} before the request headers")
    return response


def _allowed_endpoints(
    decision: Any, allowed: Mapping[str, Endpoint], target: str
) -> list[Endpoint]:
    value = None
    for option in decision.request_headers.response.header_mutation.set_headers:
        if option.header.key.lower() == keys.DESTINATION_ENDPOINT:
            value = pb.header_value(option.header)
            break
    if value is None:
        value = pb.struct_string(
            decision.dynamic_metadata, keys.DESTINATION_NAMESPACE, keys.DESTINATION_ENDPOINT
        )
    if not value:
        raise ExtProcUnavailable(f"endpoint picker {target}: the decision names no endpoint")
    endpoints: list[Endpoint] = []
    for name in value.split(","):
        endpoint = allowed.get(name.strip())
        if endpoint is not None and endpoint not in endpoints:
            endpoints.append(endpoint)
    if not endpoints:
        raise ExtProcUnavailable(
            f"endpoint picker {target}: chose {value!r}, none of it an endpoint of the pool"
        )
    return endpoints
