"""Prototype: an HTTP/2 server protocol on libnghttp2 (the C library), driven through ``ctypes``.

Used by ``bench.h2_core`` to measure what a native HTTP/2 core would cost per request in Python.
The system's ``libnghttp2.so.14`` (Debian's ``libnghttp2-14``) is loaded directly; nothing from
PyPI. Bytes go in with ``nghttp2_session_mem_recv`` and come out with
``nghttp2_session_mem_send`` (one ``transport.write`` per read), so nghttp2 never calls back to
do I/O. What it does call back into Python, per request, is what this module measures:

* ``on_begin_headers``: a request stream starts (its header list is created here);
* ``on_header``: once per header field (five for h2load's requests);
* ``on_frame_recv``: once per frame; a HEADERS or DATA frame with END_STREAM completes a request;
* ``on_data_chunk_recv``: request body bytes (never called for the GETs of the benchmark);
* ``on_stream_close``: the stream is gone (its state is dropped here);
* the data provider's read callback: copies the 1 KiB body into nghttp2's buffer, with EOF.

``level`` picks how many of these are registered: ``"full"`` (all), ``"no-headers"`` (all but
``on_header``) and ``"bare"`` (``on_frame_recv`` and the read callback only: the least a server
can register and still answer). Each registered callback is counted, so the per-request figure
can be reported; responses go out with ``nghttp2_submit_response`` and a static header list.
Not a product: no per-stream flow control toward the handler, no trailers, no limits beyond
nghttp2's own (which include HTTP messaging validation and flood protections).

Where the time goes (perf, ``full``, ``-c1 -m100``, ~12.7 us/request on the 2-core dev box):
the interpreter running the callbacks and glue ~55%, libnghttp2 itself ~12% (~1.6 us: framing,
HPACK, state), ctypes + libffi ~19% (each C->Python callback or Python->C call ~0.6-0.8 us),
libc (malloc, memmove) ~9%, kernel ~3%. So the C library is cheap; the ~13 boundary crossings
per request (9 callbacks, ~4 calls) are what costs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from typing import Any

__all__ = ["LEVELS", "NgHttp2Server", "load_nghttp2", "nghttp2_version"]

LEVELS = ("full", "no-headers", "bare")

# nghttp2.h constants (stable ABI since 1.0)
_FRAME_DATA = 0x0
_FRAME_HEADERS = 0x1
_FLAG_END_STREAM = 0x1
_DATA_FLAG_EOF = 0x1
_NV_FLAG_NO_COPY = 0x2 | 0x4  # NO_COPY_NAME | NO_COPY_VALUE
_SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
_SETTINGS_INITIAL_WINDOW_SIZE = 0x4
_SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
_CONNECTION_WINDOW = 16 * 1024 * 1024

_vp = ctypes.c_void_p
# Bytes at a C address, sliced in C: ``ptr[a:b]`` is ~0.15 us where ``ctypes.string_at`` (itself
# a foreign call) is ~1.2 us.
_BYTES = ctypes.POINTER(ctypes.c_char)
_BEGIN_HEADERS = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _BYTES, _vp)
# name and value are NUL-terminated (nghttp2 docs, with HTTP messaging validation on, which
# also rules out NUL inside them), so c_char_p hands them over as bytes without another call.
_HEADER = ctypes.CFUNCTYPE(
    ctypes.c_int,
    _vp,
    _vp,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_uint8,
    _vp,
)
_FRAME_RECV = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _BYTES, _vp)
_DATA_CHUNK = ctypes.CFUNCTYPE(
    ctypes.c_int, _vp, ctypes.c_uint8, ctypes.c_int32, _vp, ctypes.c_size_t, _vp
)
_STREAM_CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, _vp, ctypes.c_int32, ctypes.c_uint32, _vp)
_READ = ctypes.CFUNCTYPE(ctypes.c_ssize_t, _vp, ctypes.c_int32, _vp, ctypes.c_size_t, _vp, _vp, _vp)


class _Nv(ctypes.Structure):
    _fields_ = (
        ("name", _vp),
        ("value", _vp),
        ("namelen", ctypes.c_size_t),
        ("valuelen", ctypes.c_size_t),
        ("flags", ctypes.c_uint8),
    )


class _DataProvider(ctypes.Structure):
    _fields_ = (("source", _vp), ("read_callback", _READ))


class _SettingsEntry(ctypes.Structure):
    _fields_ = (("settings_id", ctypes.c_int32), ("value", ctypes.c_uint32))


class _Info(ctypes.Structure):
    _fields_ = (
        ("age", ctypes.c_int),
        ("version_num", ctypes.c_int),
        ("version_str", ctypes.c_char_p),
        ("proto_str", ctypes.c_char_p),
    )


def load_nghttp2() -> ctypes.CDLL:
    """libnghttp2 with the prototypes used here; ``OSError`` saying why when it can't be loaded."""
    names = ["libnghttp2.so.14", ctypes.util.find_library("nghttp2"), "libnghttp2.so"]
    errors = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise OSError("libnghttp2 not found (apt-get install libnghttp2-14): " + "; ".join(errors))
    protos: dict[str, tuple[Any, list[Any]]] = {
        "nghttp2_version": (ctypes.POINTER(_Info), [ctypes.c_int]),
        "nghttp2_session_callbacks_new": (ctypes.c_int, [_vp]),
        "nghttp2_session_callbacks_del": (None, [_vp]),
        "nghttp2_session_callbacks_set_on_begin_headers_callback": (None, [_vp, _BEGIN_HEADERS]),
        "nghttp2_session_callbacks_set_on_header_callback": (None, [_vp, _HEADER]),
        "nghttp2_session_callbacks_set_on_frame_recv_callback": (None, [_vp, _FRAME_RECV]),
        "nghttp2_session_callbacks_set_on_data_chunk_recv_callback": (None, [_vp, _DATA_CHUNK]),
        "nghttp2_session_callbacks_set_on_stream_close_callback": (None, [_vp, _STREAM_CLOSE]),
        "nghttp2_session_server_new": (ctypes.c_int, [_vp, _vp, _vp]),
        "nghttp2_session_del": (None, [_vp]),
        "nghttp2_session_mem_recv": (ctypes.c_ssize_t, [_vp, ctypes.c_char_p, ctypes.c_size_t]),
        "nghttp2_session_mem_send": (ctypes.c_ssize_t, [_vp, _vp]),
        "nghttp2_session_want_read": (ctypes.c_int, [_vp]),
        "nghttp2_session_want_write": (ctypes.c_int, [_vp]),
        "nghttp2_submit_settings": (ctypes.c_int, [_vp, ctypes.c_uint8, _vp, ctypes.c_size_t]),
        "nghttp2_submit_window_update": (
            ctypes.c_int,
            [_vp, ctypes.c_uint8, ctypes.c_int32, ctypes.c_int32],
        ),
        "nghttp2_submit_response": (
            ctypes.c_int,
            [_vp, ctypes.c_int32, _vp, ctypes.c_size_t, _vp],
        ),
        "nghttp2_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    }
    for symbol, (restype, argtypes) in protos.items():
        func = getattr(lib, symbol)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def nghttp2_version(lib: ctypes.CDLL) -> str:
    """The loaded library's version string, e.g. ``1.52.0``."""
    info = lib.nghttp2_version(0)
    return info.contents.version_str.decode() if info else "?"


def _nv_array(fields: list[tuple[bytes, bytes]]) -> tuple[Any, list[bytes]]:
    """A static ``nghttp2_nv[]`` (NO_COPY: the bytes kept alive in the returned list)."""
    keep: list[bytes] = []
    array = (_Nv * len(fields))()
    for entry, (name, value) in zip(array, fields, strict=True):
        keep += [name, value]
        entry.name = ctypes.cast(ctypes.c_char_p(name), _vp).value
        entry.value = ctypes.cast(ctypes.c_char_p(value), _vp).value
        entry.namelen, entry.valuelen, entry.flags = len(name), len(value), _NV_FLAG_NO_COPY
    return array, keep


class NgHttp2Server(asyncio.Protocol):
    """Answers every request ``200`` with ``body``, HTTP/2 by libnghttp2 (prior knowledge)."""

    def __init__(self, lib: ctypes.CDLL, body: bytes, level: str = "full") -> None:
        if level not in LEVELS:
            raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
        self._lib = lib
        self._mem_recv = lib.nghttp2_session_mem_recv
        self._mem_send = lib.nghttp2_session_mem_send
        self._want_read = lib.nghttp2_session_want_read
        self._submit_response = lib.nghttp2_submit_response
        self._body = body
        self._level = level
        self.transport: asyncio.Transport | None = None
        self._session = _vp()
        self._out: Any = _BYTES()  # mem_send's output pointer (sliced to bytes)
        self._out_ref = ctypes.byref(self._out)
        self._streams: dict[int, list[tuple[bytes, bytes]]] = {}
        self._current: list[tuple[bytes, bytes]] = []
        self._nva, self._nv_keep = _nv_array(
            [(b":status", b"200"), (b"content-type", b"application/octet-stream")]
        )
        self._nva_addr = ctypes.addressof(self._nva)
        self._nvlen = len(self._nv_keep) // 2
        # Callback thunks must outlive the session: kept on the instance.
        self._cb_begin = _BEGIN_HEADERS(self._on_begin_headers)
        self._cb_header = _HEADER(self._on_header)
        self._cb_frame = _FRAME_RECV(self._on_frame_recv)
        self._cb_chunk = _DATA_CHUNK(self._on_data_chunk_recv)
        self._cb_close = _STREAM_CLOSE(self._on_stream_close)
        self._cb_read = _READ(self._read)
        self._provider = _DataProvider(None, self._cb_read)
        self._provider_addr = ctypes.addressof(self._provider)
        self.calls = dict.fromkeys(
            ("begin_headers", "header", "frame_recv", "data_chunk", "stream_close", "read"), 0
        )
        self.responses = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        lib = self._lib
        callbacks = _vp()
        if lib.nghttp2_session_callbacks_new(ctypes.byref(callbacks)) != 0:
            raise MemoryError("nghttp2_session_callbacks_new")
        try:
            lib.nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, self._cb_frame)
            if self._level != "bare":
                lib.nghttp2_session_callbacks_set_on_begin_headers_callback(
                    callbacks, self._cb_begin
                )
                lib.nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
                    callbacks, self._cb_chunk
                )
                lib.nghttp2_session_callbacks_set_on_stream_close_callback(
                    callbacks, self._cb_close
                )
            if self._level == "full":
                lib.nghttp2_session_callbacks_set_on_header_callback(callbacks, self._cb_header)
            rv = lib.nghttp2_session_server_new(ctypes.byref(self._session), callbacks, None)
        finally:
            lib.nghttp2_session_callbacks_del(callbacks)
        if rv != 0:
            raise RuntimeError(f"nghttp2_session_server_new: {lib.nghttp2_strerror(rv)!r}")
        settings = (_SettingsEntry * 3)(
            _SettingsEntry(_SETTINGS_MAX_CONCURRENT_STREAMS, 128),
            _SettingsEntry(_SETTINGS_INITIAL_WINDOW_SIZE, 256 * 1024),
            _SettingsEntry(_SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024),
        )
        lib.nghttp2_submit_settings(self._session, 0, ctypes.addressof(settings), 3)
        lib.nghttp2_submit_window_update(self._session, 0, 0, _CONNECTION_WINDOW - 65535)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._mem_recv(self._session, data, len(data)) < 0:
            self._close()  # a connection error: nghttp2 queued GOAWAY, sent by _close
            return
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._session:
            self._lib.nghttp2_session_del(self._session)
            self._session = _vp()
        self.transport = None

    # -- output --------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Everything nghttp2 has queued (one mem_send per frame), in one write."""
        mem_send, session, out, out_ref = self._mem_send, self._session, self._out, self._out_ref
        n = mem_send(session, out_ref)
        if n > 0:
            first = out[:n]
            n = mem_send(session, out_ref)
            if n > 0:
                chunks = [first]
                while n > 0:
                    chunks.append(out[:n])
                    n = mem_send(session, out_ref)
                first = b"".join(chunks)
            if self.transport is not None:
                self.transport.write(first)
        if n < 0 or not (self._want_read(session) or self._lib.nghttp2_session_want_write(session)):
            self._close()

    def _close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is None:
            return
        n = self._mem_send(self._session, self._out_ref)  # the GOAWAY, if any
        if n > 0:
            transport.write(self._out[:n])
        transport.close()

    # -- nghttp2 callbacks (return 0, or nghttp2 treats it as a fatal error) -------------------

    def _on_begin_headers(self, session: int, frame: Any, user_data: int) -> int:
        self.calls["begin_headers"] += 1
        sid = int.from_bytes(frame[8:12], "little")
        headers = self._streams.get(sid)
        if headers is None:  # else trailers: appended to the same list
            self._streams[sid] = headers = []
        self._current = headers
        return 0

    def _on_header(
        self,
        session: int,
        frame: int,
        name: bytes,
        namelen: int,
        value: bytes,
        valuelen: int,
        flags: int,
        user_data: int,
    ) -> int:
        self.calls["header"] += 1
        self._current.append((name, value))
        return 0

    def _on_frame_recv(self, session: int, frame: Any, user_data: int) -> int:
        self.calls["frame_recv"] += 1
        hd = frame[8:14]  # int32 stream_id, uint8 type, uint8 flags (after size_t length)
        if hd[5] & _FLAG_END_STREAM and hd[4] <= _FRAME_HEADERS:  # DATA or HEADERS
            self.responses += 1
            self._submit_response(
                session,
                int.from_bytes(hd[:4], "little"),
                self._nva_addr,
                self._nvlen,
                self._provider_addr,
            )
        return 0

    def _on_data_chunk_recv(
        self, session: int, flags: int, stream_id: int, data: int, length: int, user_data: int
    ) -> int:
        self.calls["data_chunk"] += 1
        # The body would go to the handler here (nghttp2 re-opens the windows itself: a real engine
        # sets no_auto_window_update and calls nghttp2_session_consume as the handler consumes).
        return 0

    def _on_stream_close(
        self, session: int, stream_id: int, error_code: int, user_data: int
    ) -> int:
        self.calls["stream_close"] += 1
        self._streams.pop(stream_id, None)
        return 0

    def _read(
        self,
        session: int,
        stream_id: int,
        buf: int,
        length: int,
        data_flags: int,
        source: int,
        user_data: int,
    ) -> int:
        self.calls["read"] += 1
        body = self._body
        n = len(body)
        if n > length:  # never with 1 KiB bodies and 16 KiB frames; a real engine keeps offsets
            n = length
        ctypes.memmove(buf, body, n)
        ctypes.c_uint32.from_address(data_flags).value = _DATA_FLAG_EOF
        return n
