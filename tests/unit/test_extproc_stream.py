"""The endpoint picker's ext_proc state machine, message by message (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.backends.base import Endpoint
from inference_ext.extproc import messages as pb
from inference_ext.extproc.stream import (
    CHUNK,
    Answer,
    PickerStream,
    ProtocolError,
    Reply,
    Schedule,
    Served,
    State,
)

A = Endpoint("10.0.0.1", 8000)
B = Endpoint("10.0.0.2", 8000)
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def headers(*pairs: tuple[str, str], end: bool = False, **fields: Any) -> Any:
    base = [(":method", "POST"), (":path", "/v1/chat/completions"), *pairs]
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=pb.header_map(base), end_of_stream=end), **fields
    )


def body(data: bytes, end: bool = True) -> Any:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=end))


def response_headers(status: str, end: bool = False, served: str | None = None) -> Any:
    message = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=pb.header_map([(":status", status)]), end_of_stream=end
        )
    )
    if served is not None:
        message.metadata_context.filter_metadata["envoy.lb"].update(
            {"x-gateway-destination-endpoint-served": served}
        )
    return message


def response_body(data: bytes, end: bool) -> Any:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end))


def scheduled(stream: PickerStream, *messages: Any) -> Schedule:
    events: list[Any] = []
    for message in messages:
        events = stream.receive(message)
    assert len(events) == 1 and isinstance(events[0], Schedule), events
    return events[0]


def mutation(response: Any) -> dict[str, tuple[str, int]]:
    common = response.request_headers.response
    return {
        o.header.key: (pb.header_value(o.header), o.append_action)
        for o in common.header_mutation.set_headers
    }


def test_body_is_buffered_then_scheduled_and_echoed() -> None:
    stream = PickerStream(priority_of=lambda name: {"critical": 5}.get(name, 0))
    first = headers(("x-gateway-inference-objective", "critical"), ("x-request-id", "r1"))
    assert stream.receive(first) == []
    assert stream.receive(body(BODY[:10], end=False)) == []
    request = scheduled(stream, body(BODY[10:])).request
    assert request.request_id == "r1"
    assert request.model == "m"
    assert json.loads(request.prompt) == [{"role": "user", "content": "hi"}]
    assert (request.objective, request.priority, request.body_size) == ("critical", 5, len(BODY))
    assert request.headers[":path"] == "/v1/chat/completions"
    assert request.subset is None
    assert stream.state is State.SCHEDULING

    decision, echo = stream.decided([A, B])
    overwrite = pb.OVERWRITE_IF_EXISTS_OR_ADD
    assert mutation(decision) == {
        "x-gateway-destination-endpoint": ("10.0.0.1:8000,10.0.0.2:8000", overwrite),
        "content-length": (str(len(BODY)), overwrite),
    }
    assert decision.request_headers.response.clear_route_cache
    lb = decision.dynamic_metadata["envoy.lb"]
    assert lb["x-gateway-destination-endpoint"] == "10.0.0.1:8000,10.0.0.2:8000"
    streamed = echo.request_body.response.body_mutation.streamed_response
    assert (streamed.body, streamed.end_of_stream) == (BODY, True)
    assert stream.state is State.UPSTREAM


def test_a_large_body_is_echoed_in_chunks() -> None:
    big = json.dumps({"model": "m", "prompt": "x" * (2 * CHUNK)}).encode()
    stream = PickerStream()
    scheduled(stream, headers(), body(big))
    _, *echo = stream.decided([A])
    parts = [e.request_body.response.body_mutation.streamed_response for e in echo]
    assert b"".join(p.body for p in parts) == big
    assert [p.end_of_stream for p in parts] == [False, False, True]
    assert all(len(p.body) <= CHUNK for p in parts)


def test_headers_only_request_is_scheduled_at_once() -> None:
    stream = PickerStream()
    request = scheduled(stream, headers(end=True)).request
    assert (request.model, request.prompt, request.body_size) == ("", b"", 0)
    assert len(request.request_id) == 32  # generated: no x-request-id
    (decision,) = stream.decided([A])
    assert set(mutation(decision)) == {"x-gateway-destination-endpoint"}


def test_request_trailers_end_the_body() -> None:
    stream = PickerStream()
    stream.receive(headers())
    assert stream.receive(body(BODY, end=False)) == []
    trailers = pb.ProcessingRequest(request_trailers=pb.HttpTrailers())
    scheduled(stream, trailers)
    _, echo, trailers_response = stream.decided([A])
    assert not echo.request_body.response.body_mutation.streamed_response.end_of_stream
    assert trailers_response.WhichOneof("response") == "request_trailers"


def test_body_over_the_cap_is_answered_413() -> None:
    stream = PickerStream(max_body=16)
    stream.receive(headers())
    assert stream.receive(body(b"x" * 10, end=False)) == []
    (answer,) = stream.receive(body(b"x" * 10, end=False))
    assert isinstance(answer, Answer)
    immediate = answer.response.immediate_response
    assert immediate.status.code == 413
    assert b"16 bytes" in immediate.body
    assert stream.state is State.DONE
    assert stream.ended() is None


def test_a_bad_body_is_answered_400() -> None:
    stream = PickerStream()
    stream.receive(headers())
    (answer,) = stream.receive(body(b'{"model": 3}'))
    assert isinstance(answer, Answer)
    assert answer.response.immediate_response.status.code == 400
    assert b"model" in answer.response.immediate_response.body


def test_subset_hint_from_metadata_string_list_and_header() -> None:
    as_string = headers()
    as_string.metadata_context.filter_metadata["envoy.lb.subset_hint"].update(
        {"x-gateway-destination-endpoint-subset": "10.0.0.1:8000, 10.0.0.2:8000"}
    )
    assert scheduled(PickerStream(), as_string, body(BODY)).request.subset == {
        "10.0.0.1:8000",
        "10.0.0.2:8000",
    }
    as_list = headers(end=True)
    as_list.metadata_context.filter_metadata["envoy.lb.subset_hint"].update(
        {"x-gateway-destination-endpoint-subset": ["10.0.0.2:8000"]}
    )
    assert scheduled(PickerStream(), as_list).request.subset == {"10.0.0.2:8000"}
    empty = headers(end=True)  # present but empty: nothing is eligible (503 from the scheduler)
    empty.metadata_context.filter_metadata["envoy.lb.subset_hint"].update(
        {"x-gateway-destination-endpoint-subset": ""}
    )
    assert scheduled(PickerStream(), empty).request.subset == frozenset()
    header = headers(("x-gateway-destination-endpoint-subset", "10.0.0.1:8000"), end=True)
    assert scheduled(PickerStream(), header).request.subset == {"10.0.0.1:8000"}


def test_response_is_passed_through_and_its_end_reported() -> None:
    clock = Clock()
    stream = PickerStream(clock=clock)
    request = scheduled(stream, headers(), body(BODY)).request
    stream.decided([A, B])
    clock.now += 0.25
    (reply,) = stream.receive(response_headers("200", served="10.0.0.2:8000"))
    assert isinstance(reply, Reply)
    assert reply.response.WhichOneof("response") == "response_headers"
    assert not reply.response.response_headers.HasField("response")  # CONTINUE, nothing changed
    (echo,) = stream.receive(response_body(b"data: 1\n\n", end=False))
    streamed = echo.response.response_body.response.body_mutation.streamed_response
    assert (streamed.body, streamed.end_of_stream) == (b"data: 1\n\n", False)
    clock.now += 1.0
    echo, served = stream.receive(response_body(b"data: [DONE]\n\n", end=True))
    assert echo.response.response_body.response.body_mutation.streamed_response.end_of_stream
    assert isinstance(served, Served)
    assert served.request is request
    assert served.endpoint is B  # the endpoint the proxy reports, one of ours
    outcome = served.outcome
    assert (outcome.status, outcome.ok, outcome.aborted) == (200, True, False)
    assert outcome.response_bytes == len(b"data: 1\n\ndata: [DONE]\n\n")
    assert outcome.request_bytes == len(BODY)
    assert outcome.first_byte == pytest.approx(0.25)
    assert outcome.duration == pytest.approx(1.25)
    assert stream.ended() is None  # reported once


def test_headers_only_response_and_trailers_end_it() -> None:
    stream = PickerStream()
    scheduled(stream, headers(end=True))
    stream.decided([A])
    reply, served = stream.receive(response_headers("503", end=True))
    assert isinstance(served, Served)
    assert (served.endpoint, served.outcome.status, served.outcome.ok) == (A, 503, False)

    stream = PickerStream()
    scheduled(stream, headers(end=True))
    stream.decided([A])
    stream.receive(response_headers("200"))
    trailers = pb.ProcessingRequest(response_trailers=pb.HttpTrailers())
    reply, served = stream.receive(trailers)
    assert reply.response.WhichOneof("response") == "response_trailers"
    assert isinstance(served, Served)


def test_a_stream_cut_after_the_decision_reports_an_abort() -> None:
    stream = PickerStream()
    scheduled(stream, headers(end=True))
    stream.decided([A])
    served = stream.ended()
    assert served is not None
    assert (served.endpoint, served.outcome.status, served.outcome.aborted) == (A, 0, True)
    assert served.outcome.first_byte < 0


def test_a_served_endpoint_outside_the_decision_is_still_named() -> None:
    stream = PickerStream()
    scheduled(stream, headers(end=True))
    stream.decided([A])
    stream.receive(response_headers("200", served="10.0.0.9:8000"))
    served = stream.ended()
    assert served is not None and served.endpoint == Endpoint("10.0.0.9", 8000)


def test_body_modes() -> None:
    none = headers(
        protocol_config=pb.ProtocolConfiguration(request_body_mode=pb.ProcessingMode.NONE)
    )
    stream = PickerStream()
    scheduled(stream, none)  # no body will come: decide on the headers
    (decision,) = stream.decided([A])
    assert set(mutation(decision)) == {"x-gateway-destination-endpoint"}

    buffered_response = headers(
        end=True,
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=pb.FULL_DUPLEX_STREAMED,
            response_body_mode=pb.ProcessingMode.BUFFERED,
        ),
    )
    stream = PickerStream()
    scheduled(stream, buffered_response)
    stream.decided([A])
    stream.receive(response_headers("200"))
    reply, _ = stream.receive(response_body(b"{}", end=True))
    assert not reply.response.response_body.HasField("response")  # CONTINUE, not an echo

    buffered = headers(
        protocol_config=pb.ProtocolConfiguration(request_body_mode=pb.ProcessingMode.BUFFERED)
    )
    with pytest.raises(ProtocolError, match="BUFFERED is not supported"):
        PickerStream().receive(buffered)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([body(BODY)], "request_body while the stream is in request_headers"),
        ([headers(end=True), body(BODY)], "request_body while the stream is in scheduling"),
        (
            [headers(), response_headers("200")],
            "response_headers while the stream is in request_body",
        ),
        ([pb.ProcessingRequest()], "an empty message"),
        ([headers(observability_mode=True)], "observability_mode"),
    ],
)
def test_protocol_errors(messages: list[Any], error: str) -> None:
    stream = PickerStream()
    with pytest.raises(ProtocolError, match=error):
        for message in messages:
            stream.receive(message)


def test_response_before_its_headers_is_an_error() -> None:
    stream = PickerStream()
    scheduled(stream, headers(end=True))
    stream.decided([A])
    with pytest.raises(ProtocolError, match="response_body before response_headers"):
        stream.receive(response_body(b"", end=True))
