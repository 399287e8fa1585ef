"""A fast echo backend for tests, benchmarks and ``ambient demo`` (asyncio protocol + httptools).

Paths:
  ``/<anything>``        JSON echo: backend, method, path (with query), host, headers, body_length
  ``/status/<code>``     the echo, answered with that status
  ``/bytes/<n>``         ``n`` bytes of body (benchmarks)
  ``/body``              the request body sent back
  ``/chunked``           ``?chunks=N&size=S``: a chunked response
  ``/sse``               ``?events=N&interval_ms=M`` (``events=0``: endless; ``die_after=K`` resets
                         the connection after K events): Server-Sent Events, each carrying the send
                         time (``time.time()``)
  ``/truncate``          ``?length=N&send=K``: announces N bytes, sends K, closes
  ``/garbage``           a response that is not HTTP
  ``/ws``                WebSocket echo
  ``/stats``             counters, open/closed SSE streams, recent requests
Any path: ``?delay_ms=N`` delays the answer; ``?fail=N&fail_code=C`` fails the first N requests
carrying the same X-Request-Id (``fail_mode=reset`` resets them instead,
``fail_mode=slow&slow_ms=M`` answers them after M ms).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import socket
import struct
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl

import httptools

log = logging.getLogger(__name__)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REASONS = {200: "OK", 101: "Switching Protocols"}


class EchoStats:
    """Counters a test or benchmark reads through ``/stats`` or directly."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.open_connections = 0
        self.sse_open = 0
        self.sse_closed = 0
        self.ws_open = 0
        self.failures: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot."""
        return {
            "requests": self.requests,
            "connections": self.connections,
            "open_connections": self.open_connections,
            "sse_open": self.sse_open,
            "sse_closed": self.sse_closed,
            "ws_open": self.ws_open,
            "recent": list(self.recent),
        }


def _response(status: int, headers: list[tuple[str, str]], body: bytes, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Echo')}\r\n"]
    lines += [f"{n}: {v}\r\n" for n, v in headers]
    lines.append(f"content-length: {len(body)}\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return value.to_bytes(len(payload), "big")


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


class EchoProtocol(asyncio.Protocol):
    """One client connection of the echo server; requests are answered in order."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.stats = server.stats
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.busy = False  # a delayed or streaming response is in progress
        self.backlog: deque[tuple[bytes, bytes, list[tuple[str, str]], bytes, bool]] = deque()
        self.sse_timer: asyncio.TimerHandle | None = None
        self.sse_active = False
        self.ws = False
        self.ws_buffer = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1
        self.stats.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stats.open_connections -= 1
        self._end_sse()
        if self.ws:
            self.ws = False
            self.stats.ws_open -= 1

    def data_received(self, data: bytes) -> None:
        if self.ws:
            self._ws_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._ws_data(data[exc.args[0] :])
        except httptools.HttpParserError:
            self._write(_response(400, [], b"bad request\n", True))
            self._close()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if any(n == "expect" and v.lower() == "100-continue" for n, v in self.headers):
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        if self.url.startswith(b"/bytes/") and not self.busy and not self.backlog:
            # The benchmark path: no bookkeeping beyond the request count.
            self.stats.requests += 1
            self._write(self.server.bytes_response(int(self.url[7:]), not keep_alive))
            if not keep_alive:
                self._close()
            return
        body = b"".join(self.body)
        self.backlog.append((self.url, parser.get_method(), self.headers, body, keep_alive))
        if not self.busy:
            self._next()

    # -- request handling ----------------------------------------------------------------------

    def _next(self) -> None:
        while self.backlog and not self.busy and not self.closed:
            self._handle(*self.backlog.popleft())

    def _handle(
        self,
        url: bytes,
        method: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        stats = self.stats
        stats.requests += 1
        target = url.decode("latin-1")
        path, _, query = target.partition("?")
        params = dict(parse_qsl(query)) if query else {}
        header_map: dict[str, str] = {}
        for name, value in headers:
            header_map[name] = f"{header_map[name]},{value}" if name in header_map else value
        stats.recent.append(
            {
                "method": method.decode(),
                "path": target,
                "body_length": len(body),
                "headers": header_map,
            }
        )
        if path.startswith("/bytes/"):
            self._write(self.server.bytes_response(int(path[7:]), not keep_alive))
            if not keep_alive:
                self._close()
            return
        fail = int(params.get("fail", "0"))
        if fail:
            key = header_map.get("x-request-id", "") + params.get("fail_key", "")
            seen = stats.failures.get(key, 0)
            if seen < fail:
                stats.failures[key] = seen + 1
                mode = params.get("fail_mode")
                if mode == "reset":
                    self._abort()
                    return
                if mode == "slow":  # answer fine, but too late
                    self.busy = True
                    asyncio.get_running_loop().call_later(
                        float(params.get("slow_ms", "1000")) / 1000,
                        self._respond_later,
                        *(method, path, target, header_map, body, params, keep_alive),
                    )
                    return
                status = int(params.get("fail_code", "500"))
                self._write(
                    _response(status, [("x-echo-backend", self.server.name)], b"failed\n", False)
                )
                return
        delay = float(params.get("delay_ms", "0")) / 1000
        if delay > 0:
            self.busy = True
            asyncio.get_running_loop().call_later(
                delay,
                self._respond_later,
                method,
                path,
                target,
                header_map,
                body,
                params,
                keep_alive,
            )
            return
        self._respond(method, path, target, header_map, body, params, keep_alive)

    def _respond_later(self, *args: Any) -> None:
        self.busy = False
        if not self.closed:
            self._respond(*args)
            self._next()

    def _respond(
        self,
        method: bytes,
        path: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        params: dict[str, str],
        keep_alive: bool,
    ) -> None:
        name = self.server.name
        close = not keep_alive or path == "/close"
        if path == "/sse":
            self._start_sse(params)
            return
        if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            self._accept_ws(headers)
            return
        if path == "/garbage":
            self._write(b"THIS IS NOT HTTP\r\n\r\n")
            self._close()
            return
        if path == "/truncate":
            length, send = int(params.get("length", "100")), int(params.get("send", "10"))
            self._write(
                f"HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n".encode() + b"x" * send
            )
            self._close()
            return
        if path == "/chunked":
            chunks, size = int(params.get("chunks", "3")), int(params.get("size", "10"))
            out = [
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-echo-backend: %s\r\n\r\n"
                % name.encode()
            ]
            out += [b"%x\r\n%s\r\n" % (size, b"y" * size)] * chunks
            out.append(b"0\r\n\r\n")
            self._write(b"".join(out))
            return
        if path == "/stats":
            payload = json.dumps(self.server.stats.as_dict()).encode()
            self._write(_response(200, [("content-type", "application/json")], payload, close))
        elif path == "/body":
            content_type = headers.get("content-type", "application/octet-stream")
            self._write(
                _response(
                    200, [("content-type", content_type), ("x-echo-backend", name)], body, close
                )
            )
        else:
            status = int(path[8:]) if path.startswith("/status/") and path[8:].isdigit() else 200
            payload = json.dumps(
                {
                    "backend": name,
                    "method": method.decode(),
                    "path": target,
                    "host": headers.get("host", ""),
                    "headers": headers,
                    "body_length": len(body),
                }
            ).encode()
            response = _response(
                status,
                [("content-type", "application/json"), ("x-echo-backend", name)],
                payload,
                close,
            )
            if method == b"HEAD":
                response = response[: response.index(b"\r\n\r\n") + 4]
            self._write(response)
        if close:
            self._close()

    # -- SSE -----------------------------------------------------------------------------------

    def _start_sse(self, params: dict[str, str]) -> None:
        self.busy = True
        self.sse_active = True
        self.stats.sse_open += 1
        events = int(params.get("events", "10"))
        interval = float(params.get("interval_ms", "100")) / 1000
        die_after = int(params.get("die_after", "0"))
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nx-echo-backend: %s\r\n\r\n" % self.server.name.encode()
        )
        self._sse_tick(0, events, interval, die_after)

    def _sse_tick(self, sent: int, events: int, interval: float, die_after: int) -> None:
        self.sse_timer = None
        if self.closed or not self.sse_active:
            return
        if die_after and sent >= die_after:
            self._abort()
            return
        if events and sent >= events:
            self._write(b"0\r\n\r\n")
            self._end_sse()
            self.busy = False
            self._next()
            return
        event = b'data: {"i": %d, "t": %.6f}\n\n' % (sent, time.time())
        self._write(b"%x\r\n%s\r\n" % (len(event), event))
        self.sse_timer = asyncio.get_running_loop().call_later(
            interval, self._sse_tick, sent + 1, events, interval, die_after
        )

    def _end_sse(self) -> None:
        if self.sse_timer is not None:
            self.sse_timer.cancel()
            self.sse_timer = None
        if self.sse_active:
            self.sse_active = False
            self.stats.sse_open -= 1
            self.stats.sse_closed += 1

    # -- WebSocket -----------------------------------------------------------------------------

    def _accept_ws(self, headers: dict[str, str]) -> None:
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: %s\r\nx-echo-backend: %s\r\n\r\n"
            % (accept.encode(), self.server.name.encode())
        )
        self.ws = True
        self.stats.ws_open += 1
        pending, self.ws_buffer = self.ws_buffer, b""
        if pending:
            self._ws_data(pending)

    def _ws_data(self, data: bytes) -> None:
        if not self.ws:
            self.ws_buffer += data  # bytes after the upgrade request, before the 101 went out
            return
        buf = self.ws_buffer + data
        while len(buf) >= 2:
            opcode, second = buf[0] & 0x0F, buf[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, offset = struct.unpack("!Q", buf[2:10])[0], 10
            masked = second & 0x80
            end = offset + (4 if masked else 0) + size
            if len(buf) < end:
                break
            payload = buf[end - size : end]
            if masked:
                payload = _unmask(payload, buf[offset : offset + 4])
            buf = buf[end:]
            if opcode in (1, 2):
                self._write(_ws_frame(opcode, payload))
            elif opcode == 9:
                self._write(_ws_frame(10, payload))
            elif opcode == 8:
                self._write(_ws_frame(8, payload[:2]))
                self._close()
                return
        self.ws_buffer = buf

    # -- output --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _abort(self) -> None:
        """Reset the connection (RST, not FIN), as a crashing backend would."""
        if self.transport is not None and not self.closed:
            self.closed = True
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


class EchoServer:
    """A running echo backend: its port, name and counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = EchoStats()
        self.port = 0
        self.server: asyncio.Server | None = None
        self._bytes_cache: dict[tuple[int, bool], bytes] = {}

    def bytes_response(self, size: int, close: bool) -> bytes:
        """The cached ``/bytes/<size>`` response."""
        cached = self._bytes_cache.get((size, close))
        if cached is None:
            headers = [("content-type", "application/octet-stream"), ("x-echo-backend", self.name)]
            cached = self._bytes_cache[(size, close)] = _response(200, headers, b"x" * size, close)
        return cached

    async def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def start_echo(host: str = "127.0.0.1", port: int = 0, name: str = "echo") -> EchoServer:
    """Start an echo backend on the running loop; ``port=0`` picks a free port."""
    echo = EchoServer(name)
    loop = asyncio.get_running_loop()
    echo.server = await loop.create_server(lambda: EchoProtocol(echo), host, port, backlog=4096)
    echo.port = echo.server.sockets[0].getsockname()[1]
    return echo


def main(argv: list[str] | None = None) -> None:
    """``python -m gateway.demo.echo --port P --name NAME``."""
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--name", default="echo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    async def serve() -> None:
        echo = await start_echo(args.host, args.port, args.name)
        log.info("echo backend %s listening on %s:%d", args.name, args.host, echo.port)
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
