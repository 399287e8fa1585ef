"""The HBONE HTTP/2 engine on the wire: interop with python-h2 and every refusal it must make.

python-h2 is an independent HTTP/2 implementation, used here only as the peer; frames that no
well-behaved peer would send are built with hyperframe.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import hyperframe.frame as hf
import pytest

from mesh.errors import Http2Error, StreamClosedError
from mesh.hbone import protocol as p
from mesh.hbone.protocol import ErrorCode

from .test_hbone_protocol import exchange, of, pair

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.2:80")]


def frames(data: bytes) -> list[hf.Frame]:
    """Parse bytes our engine wrote (after any preface) with hyperframe."""
    if data.startswith(PREFACE):
        data = data[len(PREFACE) :]
    out = []
    while data:
        frame, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def ready_server() -> p.HboneConnection:
    """A server engine that has seen a client preface and SETTINGS; its output is discarded."""
    server = p.HboneConnection(False)
    server.initiate()
    server.receive(PREFACE + hf.SettingsFrame(0).serialize())
    server.data_to_send()
    return server


def headers_frame(stream_id: int, fields: list[tuple[str, str]], flags: tuple[str, ...]) -> bytes:
    frame = hf.HeadersFrame(stream_id, hpack.Encoder().encode(fields))
    frame.flags = set(flags)
    return bytes(frame.serialize())


def raw(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A frame exactly as given, valid or not (hyperframe refuses to build invalid ones)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([ftype, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


def goaway_code(data: bytes) -> int:
    (frame,) = [f for f in frames(data) if isinstance(f, hf.GoAwayFrame)]
    return int(frame.error_code)


# ---------------------------------------------------------------- interop with python-h2


def test_python_h2_client_tunnels_through_our_server() -> None:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    peer.initiate_connection()
    server = p.HboneConnection(False)
    server.initiate()
    peer.receive_data(server.data_to_send())
    peer.send_headers(1, [*CONNECT, ("forwarded", 'for="10.0.0.1:1"')])
    peer.send_data(1, b"hello")
    (req,) = of(server.receive(peer.data_to_send()), p.TunnelRequest)
    assert (req.host, req.port, req.headers["forwarded"]) == ("10.0.0.2", 80, 'for="10.0.0.1:1"')
    server.accept(1)
    # python-h2 keeps the default 16 KiB frames and 64 KiB windows: ours must honour them
    assert server.max_send_chunk(1) == 16384
    events: list[h2.events.Event] = []
    sent = 0
    for _ in range(100):  # bounded: 13 frames of 16 KiB, window updates in between
        if sent == 200_000:
            break
        room = server.max_send_chunk(1)
        if room:
            server.send(1, b"x" * min(room, 200_000 - sent))
            sent += min(room, 200_000 - sent)
        new = peer.receive_data(server.data_to_send())
        for e in new:
            if isinstance(e, h2.events.DataReceived):
                peer.acknowledge_received_data(e.flow_controlled_length, 1)
        events += new
        server.receive(peer.data_to_send())
    server.end(1)
    events += peer.receive_data(server.data_to_send())
    (resp,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(resp.headers)[b":status"] == b"200"
    got = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert got == 200_000
    assert [e for e in events if isinstance(e, h2.events.StreamEnded)]


def test_our_client_tunnels_through_a_python_h2_server() -> None:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    peer.initiate_connection()
    client = p.HboneConnection(True)
    client.initiate()
    sid = client.open_tunnel("10.0.0.2:80", p.ConnectHeaders("10.0.0.1:1"))
    client.send(sid, b"early")  # data may follow the CONNECT at once
    events = peer.receive_data(client.data_to_send())
    (req,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    fields = dict(req.headers)
    assert fields[b":method"] == b"CONNECT" and fields[b":authority"] == b"10.0.0.2:80"
    assert b":path" not in fields and b":scheme" not in fields
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived)] == [b"early"]
    peer.send_headers(sid, [(":status", "200")])
    peer.send_data(sid, b"reply", end_stream=True)
    c_events = client.receive(peer.data_to_send())
    assert of(c_events, p.TunnelEstablished)[0].stream_id == sid
    assert [e.data for e in of(c_events, p.Data)] == [b"reply"]
    assert of(c_events, p.EndOfStream)


def test_input_split_at_every_byte_gives_the_same_events() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    client.send(sid, b"a" * 3000)
    client.end(sid)
    data = client.data_to_send()
    events: list[p.Event] = []
    for i in range(len(data)):
        events += server.receive(data[i : i + 1])
    assert [type(e) for e in events] == [p.TunnelRequest, p.Data, p.EndOfStream]
    assert of(events, p.Data)[0].data == b"a" * 3000


def test_header_block_over_continuation_frames() -> None:
    server = ready_server()
    block = hpack.Encoder().encode([*CONNECT, ("x-pad", "v" * 300)])
    first = hf.HeadersFrame(1, block[:100])
    middle = hf.ContinuationFrame(1, block[100:200])
    last = hf.ContinuationFrame(1, block[200:])
    last.flags.add("END_HEADERS")
    events = server.receive(first.serialize() + middle.serialize() + last.serialize())
    (req,) = of(events, p.TunnelRequest)
    assert req.headers["x-pad"] == "v" * 300


def test_padded_data_counts_padding_against_the_window() -> None:
    server = ready_server()
    server.receive(headers_frame(1, CONNECT, ("END_HEADERS",)))
    frame = hf.DataFrame(1, b"abc")
    frame.flags.add("PADDED")
    frame.pad_length = 10
    (data,) = of(server.receive(frame.serialize()), p.Data)
    assert data.data == b"abc" and data.flow_controlled_length == 3 + 10 + 1


def test_goaway_refuses_streams_above_its_last_stream_id() -> None:
    client, server, _, _ = pair()
    first = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    second = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    goaway = hf.GoAwayFrame(0)
    goaway.last_stream_id = first
    events = client.receive(goaway.serialize())
    assert of(events, p.StreamReset) == [p.StreamReset(second, ErrorCode.REFUSED_STREAM)]
    assert of(events, p.Terminated) == [p.Terminated(0, first)]
    assert client.max_send_chunk(first) > 0  # the processed stream may finish


def test_late_frames_on_a_reset_stream_are_dropped_and_credited() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    server.accept(sid)
    exchange(client, server)
    client.send(sid, b"z" * 1000)
    in_flight = client.data_to_send()
    server.reset(sid)
    assert server.receive(in_flight) == []
    updates = [f for f in frames(server.data_to_send()) if isinstance(f, hf.WindowUpdateFrame)]
    assert [(f.stream_id, f.window_increment) for f in updates] == [(0, 1000)]
    with pytest.raises(StreamClosedError):
        server.send(sid, b"no")


def test_stream_limit_refuses_the_extra_stream() -> None:
    server = ready_server()
    data = b"".join(
        headers_frame(2 * i + 1, CONNECT, ("END_HEADERS",))
        for i in range(p.SERVER_MAX_CONCURRENT_STREAMS + 1)
    )
    events = server.receive(data)
    assert len(of(events, p.TunnelRequest)) == p.SERVER_MAX_CONCURRENT_STREAMS
    resets = [f for f in frames(server.data_to_send()) if isinstance(f, hf.RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [
        (2 * p.SERVER_MAX_CONCURRENT_STREAMS + 1, ErrorCode.REFUSED_STREAM)
    ]


def test_stream_window_overrun_resets_only_that_stream() -> None:
    server = ready_server()
    server.receive(headers_frame(1, CONNECT, ("END_HEADERS",)))
    server.receive(headers_frame(3, CONNECT, ("END_HEADERS",)))
    chunk = hf.DataFrame(1, b"o" * p.MAX_FRAME_SIZE).serialize()
    events = server.receive(chunk * (p.STREAM_WINDOW // p.MAX_FRAME_SIZE + 1))
    assert of(events, p.StreamReset) == [p.StreamReset(1, ErrorCode.FLOW_CONTROL_ERROR)]
    (other,) = of(server.receive(hf.DataFrame(3, b"fine").serialize()), p.Data)
    assert other.data == b"fine"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")], ":path"),
        ([(":method", "CONNECT"), (":authority", "a:1"), ("X-Upper", "1")], "lowercase"),
        ([(":method", "CONNECT"), (":authority", "a:1"), ("connection", "close")], "connection"),
        ([("forwarded", "x"), (":method", "CONNECT"), (":authority", "a:1")], "after a regular"),
        ([(":method", "CONNECT"), (":authority", "a:1"), (":authority", "b:1")], "repeated"),
        ([(":method", "CONNECT")], "authority"),
    ],
)
def test_malformed_connect_gets_400(fields: list[tuple[str, str]], reason: str) -> None:
    server = ready_server()
    (bad,) = of(server.receive(headers_frame(1, fields, ("END_HEADERS",))), p.TunnelMalformed)
    assert reason in bad.reason
    out = frames(server.data_to_send())
    (answer,) = [f for f in out if isinstance(f, hf.HeadersFrame)]
    assert hpack.Decoder().decode(answer.data) == [(":status", "400")]
    # the connection itself carries on: a good request on the next stream is served
    assert of(server.receive(headers_frame(3, CONNECT, ("END_HEADERS",))), p.TunnelRequest)


def _connection_error(server: p.HboneConnection, data: bytes) -> tuple[int, str]:
    with pytest.raises(Http2Error) as info:
        server.receive(data)
    code = goaway_code(server.data_to_send())
    assert code == info.value.code
    return code, str(info.value)


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (raw(0, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR, "stream 0"),
        (hf.DataFrame(9, b"x").serialize(), ErrorCode.PROTOCOL_ERROR, "idle"),
        (
            b"\x20\x00\x00\x00\x00\x00\x00\x00\x01",  # announces a 2 MiB frame
            ErrorCode.FRAME_SIZE_ERROR,
            "MAX_FRAME_SIZE",
        ),
        (raw(5, 4, 1, b"\x00\x00\x00\x02"), ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE"),
        (raw(9, 4, 1), ErrorCode.PROTOCOL_ERROR, "CONTINUATION"),
        (raw(8, 0, 0, b"\x00\x00\x00\x00"), ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0"),
        (
            raw(8, 0, 0, b"\x7f\xff\xff\xff"),
            ErrorCode.FLOW_CONTROL_ERROR,
            "overflow",
        ),
        (raw(6, 0, 1, b"12345678"), ErrorCode.PROTOCOL_ERROR, "PING on a stream"),
        (raw(3, 0, 0, b"\x00\x00\x00\x08"), ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0"),
        (raw(4, 0, 1), ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream"),
        (
            raw(1, 4, 1, b"\xff\xff\xff\xff"),
            ErrorCode.COMPRESSION_ERROR,
            "header block",
        ),
        (
            hf.HeadersFrame(1, hpack.Encoder().encode(CONNECT)).serialize()
            + hf.DataFrame(1, b"x").serialize(),
            ErrorCode.PROTOCOL_ERROR,
            "interrupted",
        ),
    ],
)
def test_connection_errors_send_goaway_with_the_right_code(
    data: bytes, code: int, reason: str
) -> None:
    assert _connection_error(ready_server(), data)[0] == code
    assert reason in _connection_error(ready_server(), data)[1]


def test_bad_preface_and_missing_settings_are_refused() -> None:
    server = p.HboneConnection(False)
    server.initiate()
    assert _connection_error(server, b"GET / HTTP/1.1\r\n\r\n")[1].startswith("not an HTTP/2")
    server = p.HboneConnection(False)
    server.initiate()
    code, reason = _connection_error(server, PREFACE + hf.PingFrame(0).serialize())
    assert (code, reason) == (ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")


def test_oversized_header_list_ends_the_connection() -> None:
    server = ready_server()
    fields = [*CONNECT, ("x-big", "b" * (p.SERVER_MAX_HEADER_LIST + 1))]
    code, _ = _connection_error(server, headers_frame(1, fields, ("END_HEADERS",)))
    assert code == ErrorCode.ENHANCE_YOUR_CALM


def test_peer_settings_change_windows_and_frame_size() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    settings = hf.SettingsFrame(0)
    settings.settings = {
        hf.SettingsFrame.INITIAL_WINDOW_SIZE: p.STREAM_WINDOW - 1000,
        hf.SettingsFrame.MAX_FRAME_SIZE: 20_000,
    }
    events = client.receive(settings.serialize())
    assert of(events, p.WindowOpened) == [p.WindowOpened(0)]
    assert client.max_send_chunk(sid) == 20_000
    client.send(sid, b"q" * 20_000)
    acks = [f for f in frames(client.data_to_send()) if isinstance(f, hf.SettingsFrame)]
    assert [f.flags for f in acks] == [{"ACK"}]
    bad = hf.SettingsFrame(0)
    bad.settings = {hf.SettingsFrame.MAX_FRAME_SIZE: 100}
    with pytest.raises(Http2Error, match="MAX_FRAME_SIZE 100"):
        client.receive(bad.serialize())
