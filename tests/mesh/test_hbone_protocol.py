"""Sans-IO HBONE: CONNECT requests and responses over h2 with no sockets."""

from __future__ import annotations

import h2.config
import h2.connection
import pytest

from mesh.errors import HboneProtocolError
from mesh.hbone import protocol as p


def pair() -> tuple[p.HboneConnection, p.HboneConnection, list[p.Event], list[p.Event]]:
    client, server = p.HboneConnection(True), p.HboneConnection(False)
    client.initiate()
    server.initiate()
    c_events, s_events = exchange(client, server)
    return client, server, c_events, s_events


def exchange(
    client: p.HboneConnection, server: p.HboneConnection
) -> tuple[list[p.Event], list[p.Event]]:
    """Move bytes both ways until quiet; returns (client events, server events)."""
    c_events: list[p.Event] = []
    s_events: list[p.Event] = []
    for _ in range(10):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            s_events += server.receive(to_server)
        if to_client:
            c_events += client.receive(to_client)
    return c_events, s_events


def of(events: list[p.Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_settings_match_ztunnel() -> None:
    """Read by python-h2, an independent implementation: our SETTINGS and window as ztunnel's."""
    server = p.HboneConnection(False)
    server.initiate()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    peer.initiate_connection()
    peer.receive_data(server.data_to_send())
    assert peer.remote_settings.initial_window_size == p.STREAM_WINDOW
    assert peer.remote_settings.max_frame_size == p.MAX_FRAME_SIZE
    assert peer.remote_settings.max_concurrent_streams == p.SERVER_MAX_CONCURRENT_STREAMS
    assert peer.remote_settings.max_header_list_size == p.SERVER_MAX_HEADER_LIST
    assert peer.outbound_flow_control_window == p.CONNECTION_WINDOW
    client, server, _, _ = pair()
    assert client.peer_max_streams == p.SERVER_MAX_CONCURRENT_STREAMS
    # connection window raised to 16 MiB both ways
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    server.accept(sid)
    exchange(client, server)
    assert client._send_window == server._send_window == p.CONNECTION_WINDOW


def test_connect_headers_and_accept() -> None:
    client, server, _, _ = pair()
    headers = p.ConnectHeaders(
        client_addr="10.0.0.1:5555",
        service_host="echo.default.svc.cluster.local",
        baggage={"k8s.namespace.name": "default", "empty": ""},
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-00",
    )
    sid = client.open_tunnel("10.0.0.2:8080", headers)
    _, s_events = exchange(client, server)
    (req,) = of(s_events, p.TunnelRequest)
    assert (req.host, req.port) == ("10.0.0.2", 8080)
    assert req.headers[":method"] == "CONNECT"
    assert ":scheme" not in req.headers and ":path" not in req.headers
    assert req.headers["forwarded"] == 'for="10.0.0.1:5555";host=echo.default.svc.cluster.local'
    assert req.headers["baggage"] == "k8s.namespace.name=default"
    assert req.headers["traceparent"] == "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    server.accept(req.stream_id)
    c_events, _ = exchange(client, server)
    (ok,) = of(c_events, p.TunnelEstablished)
    assert ok.stream_id == sid
    client.send(sid, b"ping")
    client.end(sid)
    _, s_events = exchange(client, server)
    assert [e.data for e in of(s_events, p.Data)] == [b"ping"]
    assert of(s_events, p.EndOfStream)
    server.send(sid, b"pong")
    server.end(sid)
    c_events, _ = exchange(client, server)
    assert [e.data for e in of(c_events, p.Data)] == [b"pong"]
    assert of(c_events, p.EndOfStream)


@pytest.mark.parametrize("status", [401, 503])
def test_refused(status: int) -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:8080", p.ConnectHeaders("1.2.3.4:1"))
    _, s_events = exchange(client, server)
    server.reject(of(s_events, p.TunnelRequest)[0].stream_id, status)
    c_events, _ = exchange(client, server)
    assert of(c_events, p.TunnelRefused) == [p.TunnelRefused(sid, status)]


def test_non_connect_gets_400() -> None:
    raw = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    raw.initiate_connection()
    server = p.HboneConnection(False)
    server.initiate()
    raw.receive_data(server.data_to_send())
    raw.send_headers(
        1,
        [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x:1")],
        end_stream=True,
    )
    events = server.receive(raw.data_to_send())
    assert of(events, p.TunnelMalformed)
    statuses = [
        dict(e.headers)[b":status"]
        for e in raw.receive_data(server.data_to_send())
        if hasattr(e, "headers")
    ]
    assert statuses == [b"400"]


def test_bad_authority_gets_400() -> None:
    client, server, _, _ = pair()
    client.open_tunnel("no-port", p.ConnectHeaders("1.2.3.4:1"))
    c_events, s_events = exchange(client, server)
    assert of(s_events, p.TunnelMalformed)
    assert of(c_events, p.TunnelRefused)[0].status == 400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.5:8080", ("10.0.0.5", 8080)),
        ("[fd00::5]:80", ("fd00::5", 80)),
        ("svc.ns:80", ("svc.ns", 80)),
    ],
)
def test_parse_authority(value: str, expected: tuple[str, int]) -> None:
    assert p.parse_authority(value) == expected
    assert p.format_authority(*expected) == value


@pytest.mark.parametrize(
    "value", ["", "10.0.0.5", "10.0.0.5:0", "10.0.0.5:99999", "fd00::5:80", "[zz]:80", ":80"]
)
def test_parse_authority_rejects(value: str) -> None:
    with pytest.raises(HboneProtocolError):
        p.parse_authority(value)


def test_large_frames_and_window_accounting() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    _, s_events = exchange(client, server)
    server.accept(sid)
    exchange(client, server)
    # 1 MiB frames are allowed both ways once settings are exchanged
    assert client.max_send_chunk(sid) == p.MAX_FRAME_SIZE
    total = 0
    while (room := client.max_send_chunk(sid)) > 0:
        client.send(sid, b"x" * room)
        total += room
    assert total == p.STREAM_WINDOW  # stream window is the limit, not the 16 MiB connection window
    _, s_events = exchange(client, server)
    data = of(s_events, p.Data)
    assert sum(len(d.data) for d in data) == total
    # nothing acknowledged yet: the sender stays blocked (backpressure)
    assert client.max_send_chunk(sid) == 0
    for d in data:
        server.ack(sid, d.flow_controlled_length)
    c_events, _ = exchange(client, server)
    assert of(c_events, p.WindowOpened)
    assert client.max_send_chunk(sid) > 0


def test_frame_larger_than_default_in_same_read_as_settings_ack() -> None:
    # python-h2 pitfall: the 1 MiB MAX_FRAME_SIZE must apply before the ACK is processed.
    client, server = p.HboneConnection(True), p.HboneConnection(False)
    client.initiate()
    server.initiate()
    s_bytes = server.data_to_send()
    client.receive(s_bytes)
    server.receive(client.data_to_send())
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    s_events = server.receive(client.data_to_send())
    server.accept(sid)
    server.send(sid, b"y" * 100_000)
    # server's SETTINGS ACK (for the client's settings) and a 100 KB frame in one read
    events = client.receive(server.data_to_send())
    assert sum(len(e.data) for e in of(events, p.Data)) == 100_000
    assert of(s_events, p.TunnelRequest)


def test_goaway_and_reset_events() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    server.reset(sid)
    server.goaway()
    c_events, _ = exchange(client, server)
    assert of(c_events, p.StreamReset)[0].stream_id == sid
    assert of(c_events, p.Terminated)[0].error_code == 0


def test_traceparent_format() -> None:
    tp = p.new_traceparent()
    parts = tp.split("-")
    assert parts[0] == "00" and len(parts[1]) == 32 and len(parts[2]) == 16 and parts[3] == "00"
    assert p.new_traceparent() != tp


def test_graceful_goaway_lets_open_streams_finish() -> None:
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    server.accept(sid)
    server.goaway()
    c_events, _ = exchange(client, server)
    assert of(c_events, p.Terminated)
    client.send(sid, b"after goaway")
    server.send(sid, b"reply")
    c_events, s_events = exchange(client, server)
    assert [e.data for e in of(s_events, p.Data)] == [b"after goaway"]
    assert [e.data for e in of(c_events, p.Data)] == [b"reply"]


def test_data_in_the_same_read_as_a_graceful_goaway_is_delivered() -> None:
    """The failure seen under rotation: the peer's GOAWAY and its next DATA arrive in one read."""
    client, server, _, _ = pair()
    sid = client.open_tunnel("10.0.0.2:1", p.ConnectHeaders("1.2.3.4:1"))
    exchange(client, server)
    server.accept(sid)
    client.receive(server.data_to_send())
    client.goaway()
    client.send(sid, b"queued behind the goaway")
    s_events = server.receive(client.data_to_send())  # GOAWAY + DATA in one buffer
    assert of(s_events, p.Terminated)[0].error_code == 0
    assert [e.data for e in of(s_events, p.Data)] == [b"queued behind the goaway"]
    server.send(sid, b"reply")
    assert [e.data for e in of(client.receive(server.data_to_send()), p.Data)] == [b"reply"]
