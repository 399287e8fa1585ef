"""HBONE's HTTP/2 engine alone: ours vs python-h2 doing the same work, same run, no sockets.

Run ``python -m bench.hbone_engine``. One CONNECT tunnel between a client and a server engine;
each round trip is a DATA frame each way, its window credit returned and every byte parsed by
the other side: what a ztunnel pair's HTTP/2 layer does per tunnelled request. Reported: µs per
round trip for 1 KiB and 64 KiB payloads, and tunnels opened and accepted per second. python-h2
is the library the engine replaced; the ratio is what replacing it bought.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events

from mesh.hbone import protocol as p

ROUNDS = {1024: 20_000, 65536: 3_000}
TUNNELS = 5_000


class H2Pair:
    """The same round trip on python-h2 (the reference)."""

    def __init__(self) -> None:
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.c.initiate_connection()
        self.s.initiate_connection()
        for conn in (self.c, self.s):
            conn.update_settings({4: p.STREAM_WINDOW, 5: p.MAX_FRAME_SIZE})
            conn.increment_flow_control_window(p.CONNECTION_WINDOW - 65535)
        self.pump()

    def pump(self) -> None:
        for _ in range(4):
            self.s.receive_data(self.c.data_to_send())
            self.c.receive_data(self.s.data_to_send())

    def open(self) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(":method", "CONNECT"), (":authority", "10.0.0.2:80")])
        self.s.receive_data(self.c.data_to_send())
        self.s.send_headers(sid, [(":status", "200")])
        self.c.receive_data(self.s.data_to_send())
        return sid

    def close(self, sid: int) -> None:
        self.c.end_stream(sid)
        self.s.receive_data(self.c.data_to_send())
        self.s.end_stream(sid)
        self.c.receive_data(self.s.data_to_send())

    def round_trip(self, sid: int, payload: bytes) -> None:
        for a, b in ((self.c, self.s), (self.s, self.c)):
            a.send_data(sid, payload)
            for ev in b.receive_data(a.data_to_send()):
                if isinstance(ev, h2.events.DataReceived):
                    b.acknowledge_received_data(ev.flow_controlled_length, sid)
            a.receive_data(b.data_to_send())


class OursPair:
    """Our engine."""

    def __init__(self) -> None:
        self.c, self.s = p.HboneConnection(True), p.HboneConnection(False)
        self.c.initiate()
        self.s.initiate()
        for _ in range(4):
            self.s.receive(self.c.data_to_send())
            self.c.receive(self.s.data_to_send())

    def open(self) -> int:
        sid = self.c.open_tunnel("10.0.0.2:80", p.ConnectHeaders("10.0.0.1:1", traceparent="x"))
        self.s.receive(self.c.data_to_send())
        self.s.accept(sid)
        self.c.receive(self.s.data_to_send())
        return sid

    def close(self, sid: int) -> None:
        self.c.end(sid)
        self.s.receive(self.c.data_to_send())
        self.s.end(sid)
        self.c.receive(self.s.data_to_send())

    def round_trip(self, sid: int, payload: bytes) -> None:
        for a, b in ((self.c, self.s), (self.s, self.c)):
            a.send(sid, payload)
            for ev in b.receive(a.data_to_send()):
                if isinstance(ev, p.Data):
                    b.ack(sid, ev.flow_controlled_length)
            a.receive(b.data_to_send())


def timed(fn: Callable[[], None], count: int) -> float:
    """µs per call, best of three."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main() -> None:
    rows: list[tuple[str, float, float]] = []
    for size, rounds in ROUNDS.items():
        payload = b"x" * size
        results = []
        for pair_type in (H2Pair, OursPair):
            pair = pair_type()
            sid = pair.open()

            def trip(pair: H2Pair | OursPair = pair, sid: int = sid, data: bytes = payload) -> None:
                pair.round_trip(sid, data)

            results.append(timed(trip, rounds))
        rows.append((f"round trip, {size // 1024} KiB each way (µs)", results[0], results[1]))
    tunnel_results = []
    for pair_type in (H2Pair, OursPair):
        pair = pair_type()

        def tunnel(pair: H2Pair | OursPair = pair) -> None:
            pair.close(pair.open())

        tunnel_results.append(timed(tunnel, TUNNELS))
    rows.append(("open + accept + close a tunnel (µs)", tunnel_results[0], tunnel_results[1]))
    print("\nbench.hbone_engine — HBONE HTTP/2 engine, both sides in one process, no sockets\n")
    print(f"{'operation':42} {'python-h2':>10} {'ours':>10} {'h2 / ours':>10}")
    for name, ref, ours in rows:
        print(f"{name:42} {ref:10.1f} {ours:10.1f} {ref / ours:9.1f}x")


if __name__ == "__main__":
    main()
