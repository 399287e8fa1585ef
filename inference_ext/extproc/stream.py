"""One ext_proc stream as the endpoint picker serves it: a sans-IO state machine.

:class:`PickerStream` takes the proxy's ``ProcessingRequest`` messages one at a time and returns
events: :class:`Reply` (send this response), :class:`Schedule` (ask the scheduler; then call
:meth:`PickerStream.decided` or :meth:`PickerStream.refused`), :class:`Answer` (send this
ImmediateResponse and end the stream) and :class:`Served` (the response ended: tell the
scheduler). It never touches a socket or the scheduler; ``server.py`` drives it over gRPC.

The contract is GIE's EPP in FULL_DUPLEX_STREAMED mode: the request headers are held until the
body's end (the decision goes back as the *request headers* response), the body is buffered up to
a cap and echoed back as ``streamed_response`` chunks after the decision; response messages are
answered in kind (CONTINUE, or the chunk echoed when the response body is full-duplex too).
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import Endpoint
from inference_ext.extproc import keys
from inference_ext.extproc import messages as pb
from inference_ext.request import (
    OBJECTIVE_HEADER,
    SUBSET_HEADER,
    InferenceRequest,
    RequestError,
    parse_body,
    subset_of,
)

DEFAULT_MAX_BODY = 10 * 1024 * 1024  # GIE's lightweight EPP's cap
CHUNK = 62_000  # GIE's echo chunk: under the 64 KiB some Envoy builds allow per streamed chunk


class ProtocolError(Exception):
    """The proxy broke the ext_proc contract: a message out of order or an unsupported mode."""


class State(enum.Enum):
    """Where a stream is."""

    REQUEST_HEADERS = "request_headers"  # nothing received yet
    REQUEST_BODY = "request_body"  # headers held, body being buffered
    SCHEDULING = "scheduling"  # the request is with the scheduler
    UPSTREAM = "upstream"  # the decision went back; waiting for the response
    RESPONSE = "response"  # the response's headers passed; its body is streaming
    DONE = "done"  # the response ended, or the request was answered here


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``response``; the stream goes on."""

    response: Any


@dataclass(frozen=True, slots=True)
class Schedule:
    """The request is complete: schedule it, then call ``decided`` or ``refused``."""

    request: InferenceRequest


@dataclass(frozen=True, slots=True)
class Answer:
    """Send ``response`` (an ImmediateResponse) and end the stream."""

    response: Any


@dataclass(slots=True)  # not frozen: Outcome's members are plain attributes
class StreamOutcome:
    """How the request ended as the proxy reported it (a ``gateway.backends.base.Outcome``).

    Times are seconds from the decision; ``status`` is 0 when no response headers came.
    """

    status: int
    ok: bool
    aborted: bool
    request_bytes: int
    response_bytes: int
    first_byte: float
    duration: float
    state: Any = None
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Served:
    """The response ended (or the stream did): pass this to ``Scheduler.served``."""

    request: InferenceRequest
    endpoint: Endpoint
    outcome: StreamOutcome


Event = Reply | Schedule | Answer | Served


def no_priority(objective: str) -> int:
    """Every objective at priority 0 (what a pool without InferenceObjectives gets)."""
    return 0


def immediate(status: int, message: str) -> Any:
    """A ProcessingResponse answering the client with ``status`` and ``message`` as text."""
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=pb.HttpStatus(code=status),
            headers=pb.set_headers([("content-type", "text/plain; charset=utf-8")]),
            body=message.encode(),
            details=message,
        )
    )


class PickerStream:
    """One ext_proc stream of the endpoint picker (see the module docstring)."""

    def __init__(
        self,
        *,
        priority_of: Callable[[str], int] = no_priority,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = State.REQUEST_HEADERS
        self.request: InferenceRequest | None = None
        self.endpoints: tuple[Endpoint, ...] = ()
        self._priority_of = priority_of
        self._max_body = max_body
        self._clock = clock
        self._headers: dict[str, str] = {}
        self._subset: frozenset[str] | None = None
        self._body = bytearray()
        self._body_seen = False  # a request_body message came (the echo is owed)
        self._trailers_seen = False
        self._request_duplex = True  # no protocol_config: GIE's deployments, full duplex
        self._response_duplex = True
        self._decided_at = 0.0
        self._first_byte = -1.0
        self._status = 0
        self._served: str | None = None
        self._response_bytes = 0

    # -- the proxy's messages ----------------------------------------------------------------

    def receive(self, message: Any) -> list[Event]:
        """Take one ProcessingRequest; return what to do. Raises ProtocolError."""
        if message.observability_mode:
            raise ProtocolError("observability_mode streams cannot choose an endpoint")
        kind = message.WhichOneof("request")
        if message.HasField("metadata_context"):
            self._read_metadata(message.metadata_context)
        state = self.state
        if state is State.REQUEST_HEADERS and kind == "request_headers":
            return self._request_headers(message)
        if state is State.REQUEST_BODY and kind == "request_body":
            return self._request_body(message.request_body)
        if state is State.REQUEST_BODY and kind == "request_trailers":
            self._trailers_seen = True
            return self._complete()
        if state in (State.UPSTREAM, State.RESPONSE) and kind is not None:
            if kind == "response_headers":
                return self._response_headers(message.response_headers)
            if kind == "response_body":
                return self._response_body(message.response_body)
            if kind == "response_trailers":
                reply = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
                return [Reply(reply), self._end(aborted=False)]
        raise ProtocolError(f"{kind or 'an empty message'} while the stream is in {state.value}")

    def _request_headers(self, message: Any) -> list[Event]:
        if message.HasField("protocol_config"):
            config = message.protocol_config
            self._response_duplex = config.response_body_mode == pb.FULL_DUPLEX_STREAMED
            mode = config.request_body_mode
            if mode == pb.ProcessingMode.NONE:
                self._request_duplex = False
            elif mode != pb.FULL_DUPLEX_STREAMED:
                name = pb.ProcessingMode.BodySendMode.Name(mode)
                raise ProtocolError(
                    f"request_body_mode {name} is not supported: the endpoint picker needs "
                    "FULL_DUPLEX_STREAMED (or NONE)"
                )
        headers = self._headers
        for header in message.request_headers.headers.headers:
            headers.setdefault(header.key.lower(), pb.header_value(header))
        if message.request_headers.end_of_stream or not self._request_duplex:
            return self._complete()
        self.state = State.REQUEST_BODY
        return []

    def _request_body(self, body: Any) -> list[Event]:
        self._body_seen = True
        chunk = body.body
        if len(self._body) + len(chunk) > self._max_body:
            self.state = State.DONE
            message = f"the request body is over the endpoint picker's {self._max_body} bytes"
            return [Answer(immediate(413, message))]
        self._body += chunk
        return self._complete() if body.end_of_stream else []

    def _complete(self) -> list[Event]:
        body = bytes(self._body)
        try:
            model, prompt, stream = parse_body(body)
        except RequestError as exc:
            self.state = State.DONE
            return [Answer(immediate(400, str(exc)))]
        headers = self._headers
        objective = headers.get(OBJECTIVE_HEADER, "")
        subset = self._subset
        if subset is None:
            subset = subset_of(headers.get(SUBSET_HEADER))
        self.request = InferenceRequest(
            request_id=headers.get(keys.REQUEST_ID) or uuid.uuid4().hex,
            model=model,
            prompt=prompt,
            priority=self._priority_of(objective),
            objective=objective,
            stream=stream,
            body_size=len(body),
            subset=subset,
            headers=headers,
        )
        self.state = State.SCHEDULING
        return [Schedule(self.request)]

    def _read_metadata(self, metadata: Any) -> None:
        namespaces = metadata.filter_metadata
        if keys.DESTINATION_NAMESPACE in namespaces:
            lb = namespaces[keys.DESTINATION_NAMESPACE].fields
            if keys.SERVED_ENDPOINT in lb:
                self._served = lb[keys.SERVED_ENDPOINT].string_value.strip() or None
        if self.state is State.REQUEST_HEADERS and keys.SUBSET_NAMESPACE in namespaces:
            hint = namespaces[keys.SUBSET_NAMESPACE].fields
            if keys.SUBSET_KEY in hint:
                # A string "ip:port,ip:port" (header-to-metadata) or a list of such strings.
                value = hint[keys.SUBSET_KEY]
                if value.WhichOneof("kind") == "list_value":
                    parts = [v.string_value for v in value.list_value.values]
                else:
                    parts = [value.string_value]
                self._subset = frozenset(
                    p.strip() for part in parts for p in part.split(",") if p.strip()
                )

    # -- the scheduler's answer ---------------------------------------------------------------

    def decided(self, endpoints: Sequence[Endpoint]) -> list[Any]:
        """The responses that carry the decision (first = the pick, the rest fallbacks): the
        request headers response, then the body echoed back, then the trailers response."""
        if self.state is not State.SCHEDULING:
            raise ProtocolError(f"a decision while the stream is in {self.state.value}")
        if not endpoints:
            raise ValueError("a decision needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.state = State.UPSTREAM
        self._decided_at = self._clock()
        value = ",".join(str(e) for e in endpoints)
        headers = [(keys.DESTINATION_ENDPOINT, value)]
        if self._body_seen:
            headers.append(("content-length", str(len(self._body))))
        decision = pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(
                response=pb.CommonResponse(
                    header_mutation=pb.set_headers(headers), clear_route_cache=True
                )
            )
        )
        decision.dynamic_metadata.update(
            {keys.DESTINATION_NAMESPACE: {keys.DESTINATION_ENDPOINT: value}}
        )
        out = [decision]
        if self._body_seen and self._request_duplex:
            body = bytes(self._body)
            last = not self._trailers_seen
            starts = range(0, len(body), CHUNK) if body else [0]
            for start in starts:
                chunk = body[start : start + CHUNK]
                end = last and start + CHUNK >= len(body)
                out.append(pb.ProcessingResponse(request_body=_streamed(chunk, end)))
        if self._trailers_seen:
            out.append(pb.ProcessingResponse(request_trailers=pb.TrailersResponse()))
        self._body = bytearray()
        return out

    def refused(self, status: int, message: str) -> Any:
        """The ImmediateResponse for a request the scheduler refused (429 shed, 503 none)."""
        self.state = State.DONE
        return immediate(status, message)

    # -- the response -------------------------------------------------------------------------

    def _response_headers(self, message: Any) -> list[Event]:
        if self.state is not State.UPSTREAM:
            raise ProtocolError("response_headers twice")
        self.state = State.RESPONSE
        self._first_byte = self._clock() - self._decided_at
        for header in message.headers.headers:
            if header.key == ":status":
                value = pb.header_value(header)
                self._status = int(value) if value.isdigit() else 0
                break
        events: list[Event] = [Reply(pb.ProcessingResponse(response_headers=pb.HeadersResponse()))]
        if message.end_of_stream:
            events.append(self._end(aborted=False))
        return events

    def _response_body(self, body: Any) -> list[Event]:
        if self.state is not State.RESPONSE:
            raise ProtocolError("response_body before response_headers")
        self._response_bytes += len(body.body)
        if self._response_duplex:
            reply = pb.ProcessingResponse(response_body=_streamed(body.body, body.end_of_stream))
        else:
            reply = pb.ProcessingResponse(response_body=pb.BodyResponse())
        events: list[Event] = [Reply(reply)]
        if body.end_of_stream:
            events.append(self._end(aborted=False))
        return events

    def ended(self) -> Served | None:
        """The stream closed: the Served still owed for a decided request, else None. It is
        ``aborted``: the picker did not see the response's end (a proxy's half-close and its
        reset look alike to a gRPC server, so the two are not told apart)."""
        if self.state in (State.UPSTREAM, State.RESPONSE):
            return self._end(aborted=True)
        return None

    def _end(self, *, aborted: bool) -> Served:
        assert self.request is not None
        self.state = State.DONE
        endpoint = self.endpoints[0]
        if self._served is not None:
            endpoint = _endpoint_named(self._served, self.endpoints) or endpoint
        status = self._status
        outcome = StreamOutcome(
            status=status,
            ok=status < 500,
            aborted=aborted,
            request_bytes=self.request.body_size,
            response_bytes=self._response_bytes,
            first_byte=self._first_byte,
            duration=self._clock() - self._decided_at,
        )
        return Served(self.request, endpoint, outcome)


def _streamed(chunk: bytes, end: bool) -> Any:
    return pb.BodyResponse(
        response=pb.CommonResponse(
            body_mutation=pb.BodyMutation(
                streamed_response=pb.StreamedBodyResponse(body=chunk, end_of_stream=end)
            )
        )
    )


def _endpoint_named(name: str, chosen: Sequence[Endpoint]) -> Endpoint | None:
    """The endpoint ``ip:port`` names: one of ours (keeping its protocol), else a new one."""
    for endpoint in chosen:
        if str(endpoint) == name:
            return endpoint
    host, sep, port = name.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return Endpoint(host.strip("[]"), int(port))
