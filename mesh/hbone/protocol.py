"""Sans-IO HBONE on top of h2: CONNECT requests and responses in, typed tunnel events out."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from mesh.errors import HboneProtocolError

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
SERVER_MAX_CONCURRENT_STREAMS = 200
CLIENT_MAX_STREAMS = 100
CLIENT_MAX_HEADER_LIST = 16 * 1024
SERVER_MAX_HEADER_LIST = 64 * 1024
DEFAULT_FRAME_SIZE = 16384


def _data_body_repr(frame: hyperframe.frame.DataFrame) -> str:
    return f"data=<{len(frame.data)} bytes>"


# h2 formats every received frame for a trace log even when nothing logs it
# (``logger.trace("Received frame: %s", repr(frame))`` in H2Connection._receive_frame), and
# hyperframe's repr of a DATA frame re-serializes and hex-encodes the whole payload to show 20
# characters of it: for bulk tunnels that was most of the receiving ztunnel's CPU. Describing
# the payload by its length makes the repr constant-time; it only changes log text.
hyperframe.frame.DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign, assignment]


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    """Server side: a well-formed CONNECT arrived for ``host:port``."""

    stream_id: int
    host: str
    port: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TunnelMalformed:
    """Server side: a request was answered 400 by the protocol layer itself."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TunnelEstablished:
    """Client side: the peer answered 200; data may flow."""

    stream_id: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TunnelRefused:
    """Client side: the peer answered a status other than 200."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Data:
    """Tunnel payload; ``flow_controlled_length`` must be acknowledged once consumed."""

    stream_id: int
    data: bytes
    flow_controlled_length: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer half-closed its sending side (FIN)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset the stream; NO_ERROR and CANCEL mean EOF."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Send window grew (``stream_id`` 0: the connection window)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Terminated:
    """GOAWAY received: no new streams; those up to ``last_stream_id`` may finish."""

    error_code: int
    last_stream_id: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """A PING we sent came back."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """The peer's SETTINGS arrived or changed (e.g. MAX_CONCURRENT_STREAMS)."""

    max_concurrent_streams: int


Event = (
    TunnelRequest
    | TunnelMalformed
    | TunnelEstablished
    | TunnelRefused
    | Data
    | EndOfStream
    | StreamReset
    | WindowOpened
    | Terminated
    | PingAcked
    | SettingsChanged
)


def parse_authority(value: str) -> tuple[str, int]:
    """``ip:port`` or ``[v6]:port`` (or ``host:port``) into host and port; else 400."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise HboneProtocolError(f"bad :authority {value!r}: expected host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise HboneProtocolError(f"bad :authority {value!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise HboneProtocolError(f"bad :authority {value!r}: invalid IPv6 address") from exc
    elif ":" in host:
        raise HboneProtocolError(f"bad :authority {value!r}: IPv6 must be bracketed")
    return host, port


def format_authority(host: str, port: int) -> str:
    """The :authority form of an address (IPv6 bracketed)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def new_traceparent() -> str:
    """A random W3C traceparent, one per outbound connection."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


@dataclass(frozen=True, slots=True)
class ConnectHeaders:
    """What an HBONE client says about the connection it carries."""

    client_addr: str
    service_host: str | None = None
    baggage: Mapping[str, str] = field(default_factory=dict)
    traceparent: str = field(default_factory=new_traceparent)

    def render(self, authority: str) -> list[tuple[str, str]]:
        """The CONNECT header block: no :scheme/:path, as RFC 9113 §8.5 requires."""
        forwarded = f'for="{self.client_addr}"'
        if self.service_host:
            forwarded += f";host={self.service_host}"
        headers = [(":method", "CONNECT"), (":authority", authority)]
        items = ",".join(f"{k}={v}" for k, v in self.baggage.items() if v)
        if items:
            headers.append(("baggage", items))
        headers.append(("forwarded", forwarded))
        headers.append(("traceparent", self.traceparent))
        return headers


class _DrainingH2Connection(h2.connection.H2Connection):
    """python-h2 with RFC 9113 §6.8 graceful GOAWAY.

    python-h2 moves the whole connection to CLOSED on any GOAWAY, sent or received, and then refuses
    DATA on the streams that the GOAWAY lets finish. A NO_ERROR GOAWAY therefore keeps the
    connection open here, at the frame itself: DATA that follows the GOAWAY in the same read is
    still accepted. The transport refuses new tunnels itself once a GOAWAY was seen.
    """

    def _reopen(self) -> None:
        self.state_machine.state = (
            h2.connection.ConnectionState.CLIENT_OPEN
            if self.config.client_side
            else h2.connection.ConnectionState.SERVER_OPEN
        )

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        if frame.error_code != h2.errors.ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)
        # Not the base method: it also discards queued outbound data, which a drain still sends.
        self.state_machine.process_input(h2.connection.ConnectionInputs.RECV_GOAWAY)
        self._reopen()
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.errors.ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def close_connection(
        self,
        error_code: int = 0,
        additional_data: bytes | None = None,
        last_stream_id: int | None = None,
    ) -> None:
        super().close_connection(error_code, additional_data, last_stream_id)
        if error_code == h2.errors.ErrorCodes.NO_ERROR:
            self._reopen()


class HboneConnection:
    """One HTTP/2 connection carrying HBONE tunnels; bytes in, events and bytes out."""

    def __init__(self, client_side: bool) -> None:
        self.client_side = client_side
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        self.h2 = _DrainingH2Connection(config=config)
        self._pending_requests: set[int] = set()

    def initiate(self) -> None:
        """Send the preface and SETTINGS: 4 MiB stream / 16 MiB connection windows, 1 MiB frames."""
        settings = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if self.client_side:
            settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = CLIENT_MAX_HEADER_LIST
        else:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
                SERVER_MAX_CONCURRENT_STREAMS
            )
            settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = SERVER_MAX_HEADER_LIST
        self.h2.local_settings = h2.settings.Settings(
            client=self.client_side, initial_values=settings
        )
        self.h2.initiate_connection()
        # h2 fixes its inbound frame limit per receive_data() call; raise it now so a > 16 KiB
        # frame arriving in the same read as the SETTINGS ACK is not rejected.
        self.h2.max_inbound_frame_size = MAX_FRAME_SIZE
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport."""
        return self.h2.data_to_send()

    @property
    def peer_max_streams(self) -> int:
        """Streams the peer lets us open concurrently."""
        return int(self.h2.remote_settings.max_concurrent_streams)

    @property
    def open_outbound_streams(self) -> int:
        """Streams we opened that are still open."""
        return int(self.h2.open_outbound_streams)

    def max_send_chunk(self, stream_id: int) -> int:
        """How many bytes may be sent on the stream right now."""
        try:
            window = self.h2.local_flow_control_window(stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            return 0
        return min(window, self.h2.max_outbound_frame_size)

    def open_tunnel(self, authority: str, headers: ConnectHeaders) -> int:
        """Client: send CONNECT for ``authority``; returns the stream id."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers.render(authority))
        self._pending_requests.add(stream_id)
        return stream_id

    def accept(self, stream_id: int, extra: Sequence[tuple[str, str]] = ()) -> None:
        """Server: answer 200; data flows from now on."""
        self.h2.send_headers(stream_id, [(":status", "200"), *extra])

    def reject(self, stream_id: int, status: int) -> None:
        """Server: answer a non-200 status and end the stream."""
        try:
            self.h2.send_headers(stream_id, [(":status", str(status))], end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue payload that fits the window (check ``max_send_chunk`` first)."""
        self.h2.send_data(stream_id, data)

    def end(self, stream_id: int) -> None:
        """Half-close our side (empty DATA with END_STREAM)."""
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.StreamClosedError:
            pass

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abort a stream."""
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass

    def ack(self, stream_id: int, length: int) -> None:
        """Return consumed bytes to the peer's send window."""
        if length <= 0:
            return
        try:
            self.h2.acknowledge_received_data(length, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            # The stream is gone; the connection window still needs the credit back.
            self.h2.increment_flow_control_window(length)

    def ping(self, payload: bytes) -> None:
        """Send a keep-alive PING (8 bytes)."""
        self.h2.ping(payload)

    def goaway(self, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Announce that no new streams will be accepted; with NO_ERROR open streams continue."""
        self.h2.close_connection(error_code=code)

    def receive(self, data: bytes) -> list[Event]:
        """Feed transport bytes; returns tunnel events. Raises h2 ProtocolError on violations."""
        out: list[Event] = []
        for ev in self.h2.receive_data(data):
            self._translate(ev, out)
        return out

    def _translate(self, ev: h2.events.Event, out: list[Event]) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            self._on_request(ev, out)
        elif isinstance(ev, h2.events.ResponseReceived):
            self._on_response(ev, out)
        elif isinstance(ev, h2.events.DataReceived):
            assert ev.stream_id is not None and ev.data is not None
            if ev.data:
                out.append(Data(ev.stream_id, ev.data, ev.flow_controlled_length or 0))
            else:
                self.ack(ev.stream_id, ev.flow_controlled_length or 0)  # padding only
        elif isinstance(ev, h2.events.StreamEnded):
            assert ev.stream_id is not None
            out.append(EndOfStream(ev.stream_id))
        elif isinstance(ev, h2.events.StreamReset):
            assert ev.stream_id is not None
            self._pending_requests.discard(ev.stream_id)
            out.append(StreamReset(ev.stream_id, int(ev.error_code or 0)))
        elif isinstance(ev, h2.events.WindowUpdated):
            out.append(WindowOpened(ev.stream_id or 0))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            out.append(Terminated(int(ev.error_code or 0), int(ev.last_stream_id or 0)))
        elif isinstance(ev, h2.events.PingAckReceived):
            out.append(PingAcked(ev.ping_data or b""))
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            out.append(SettingsChanged(self.peer_max_streams))
            out.append(WindowOpened(0))

    def _on_request(self, ev: h2.events.RequestReceived, out: list[Event]) -> None:
        assert ev.stream_id is not None
        headers = {str(k): str(v) for k, v in ev.headers or ()}
        try:
            if headers.get(":method") != "CONNECT":
                raise HboneProtocolError(f"method {headers.get(':method')!r} is not CONNECT")
            host, port = parse_authority(headers.get(":authority", ""))
        except HboneProtocolError as exc:
            self.reject(ev.stream_id, exc.status)
            out.append(TunnelMalformed(ev.stream_id, str(exc)))
            return
        out.append(TunnelRequest(ev.stream_id, host, port, headers))

    def _on_response(self, ev: h2.events.ResponseReceived, out: list[Event]) -> None:
        assert ev.stream_id is not None
        headers = {str(k): str(v) for k, v in ev.headers or ()}
        self._pending_requests.discard(ev.stream_id)
        status = int(headers.get(":status", "0"))
        if status == 200:
            out.append(TunnelEstablished(ev.stream_id, headers))
        else:
            self.reset(ev.stream_id)
            out.append(TunnelRefused(ev.stream_id, status))
