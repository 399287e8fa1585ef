"""Run inside a network namespace: sniff one interface with AF_PACKET and report what crossed it."""

from __future__ import annotations

import json
import socket
import sys
import time

ETH_P_ALL = 0x0003


def main() -> None:
    """``netns_capture.py IFACE SECONDS STOPFILE NEEDLE...``: JSON report on stdout at the end."""
    iface, seconds, stop_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    needles = [n.encode() for n in sys.argv[4:]]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.1)
    print("ready", flush=True)
    found = {n.decode(): 0 for n in needles}
    frames = hbone = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            try:
                with open(stop_file):
                    break
            except OSError:
                continue
        frames += 1
        if len(frame) > 14 + 20 + 4 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = frame[14 + ihl : 14 + ihl + 2], frame[14 + ihl + 2 : 14 + ihl + 4]
            if 15008 in (int.from_bytes(sport, "big"), int.from_bytes(dport, "big")):
                hbone += 1
        for n in needles:
            if n in frame:
                found[n.decode()] += 1
    print(json.dumps({"frames": frames, "hbone_frames": hbone, "found": found}), flush=True)


if __name__ == "__main__":
    main()
