"""In-pod capture (``--in-pod-capture``): the ztunnel redirects and serves inside each pod.

Istio's in-pod redirection, as a node agent in the ztunnel itself: for every enrolled Pod on this
node it finds the Pod's network namespace (:mod:`mesh.ztunnel.netns`), installs an nftables table
``ambient`` there that REDIRECTs the Pod's outbound TCP to the capture port, and opens, inside that
namespace, the outbound capture listener (127.0.0.1:capture port) and the inbound HBONE listener
(Pod IP:HBONE port). A captured connection's source is the Pod's IP, so it is sent as the Pod's
identity; HBONE to the Pod's IP reaches the listener in its namespace. When the Pod goes away or
leaves the mesh, the table is deleted and both listeners closed; when the ztunnel stops, only
the listeners close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from mesh.state.registry import MeshState
from mesh.ztunnel import netns
from mesh.ztunnel.inbound import Inbound
from mesh.ztunnel.listen import bind
from mesh.ztunnel.outbound import Outbound

log = logging.getLogger(__name__)

TABLE = "ambient"
# Seconds between looks for a Pod's namespace not found yet (each look enters every namespace
# of the node), doubling up to the maximum while some Pod stays unfound.
RETRY, MAX_RETRY = 0.5, 30.0


def rules(capture_port: int, skip_ports: frozenset[int]) -> str:
    """The Pod's nftables table: its outbound TCP, except to loopback and to the ztunnel's own
    ports, to the capture port. Declaring the table before deleting it makes a re-install (after
    a ztunnel restart) one atomic replacement."""
    ports = ", ".join(str(p) for p in sorted(skip_ports | {capture_port}))
    return (
        f"table ip {TABLE}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        '    oifname "lo" return\n'
        "    ip daddr 127.0.0.0/8 return\n"
        f"    tcp dport {{ {ports} }} return\n"
        f"    meta l4proto tcp redirect to :{capture_port}\n"
        "  }\n"
        "}\n"
    )


def _nft(script: str) -> None:
    result = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        raise netns.NetnsError(f"nft: {result.stderr.strip()}")


def _delete_rules() -> None:
    _nft(f"delete table ip {TABLE}\n")


@dataclass(slots=True)
class Captured:
    """One Pod's redirection: its namespace, rules and listeners."""

    key: str
    ip: str
    ns: netns.Netns
    capture: asyncio.Server
    close_inbound: Callable[[], None]


class InPodCapture:
    """Keeps one :class:`Captured` per enrolled Pod of this node."""

    def __init__(
        self,
        node: str,
        state: Callable[[], MeshState],
        outbound: Outbound,
        inbound: Inbound,
        capture_port: int = 15001,
    ) -> None:
        self.node = node
        self.state = state
        self.outbound = outbound
        self.inbound = inbound
        self.capture_port = capture_port
        self.pods: dict[tuple[str, str], Captured] = {}  # (namespace/name, IP) -> Captured
        self._lock = asyncio.Lock()
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY
        self._tasks: set[asyncio.Task[None]] = set()

    def changed(self) -> None:
        """Reconcile soon (the mesh state changed)."""
        task = asyncio.get_running_loop().create_task(self.reconcile())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconcile(self) -> None:
        """Capture every enrolled local Pod not captured yet; release the others."""
        async with self._lock:
            wanted = {(w.key, w.ip) for w in self.state().node_workloads(self.node)}
            for gone in set(self.pods) - wanted:
                await self._release(self.pods.pop(gone))
            missing = wanted - self.pods.keys()
            if not missing:
                self._delay = RETRY
                return
            found = await asyncio.to_thread(netns.find, {ip for _, ip in missing})
            for key, ip in sorted(missing):
                ns = found.get(ip)
                if ns is None:
                    log.info("in-pod capture: no network namespace holds %s (%s) yet", ip, key)
                    continue
                try:
                    self.pods[(key, ip)] = await self._capture(key, ip, ns)
                except (OSError, netns.NetnsError) as exc:
                    log.error("in-pod capture of %s (%s) failed: %s", key, ip, exc)
                    ns.close()
            if wanted - self.pods.keys():
                self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._retry is None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self._delay, self._retry_now)
            self._delay = min(self._delay * 2, MAX_RETRY)

    def _retry_now(self) -> None:
        self._retry = None
        self.changed()

    async def _capture(self, key: str, ip: str, ns: netns.Netns) -> Captured:
        skip = self.inbound.illegal_ports

        def enter() -> tuple[socket.socket, socket.socket]:
            capture = bind("127.0.0.1", self.capture_port)
            try:
                hbone = bind(ip, self.inbound.port, 4096)
            except OSError:
                capture.close()
                raise
            try:
                _nft(rules(self.capture_port, skip))
            except netns.NetnsError:
                capture.close()
                hbone.close()
                raise
            return capture, hbone

        capture_sock, hbone_sock = await asyncio.to_thread(netns.run_in, ns, enter)
        server = await self.outbound.serve_capture(capture_sock)
        close_inbound = self.inbound.serve(hbone_sock)
        log.info("in-pod capture of %s (%s) in %s", key, ip, ns.path)
        return Captured(key, ip, ns, server, close_inbound)

    async def _release(self, pod: Captured) -> None:
        pod.capture.close()
        self.outbound.forget(pod.capture)
        pod.close_inbound()
        with contextlib.suppress(OSError, netns.NetnsError):
            await asyncio.to_thread(netns.run_in, pod.ns, _delete_rules)
        pod.ns.close()
        log.info("in-pod capture of %s (%s) released", pod.key, pod.ip)

    async def close(self) -> None:
        """Close the listeners and leave the rules: while the ztunnel is away (a restart) Pod
        traffic fails rather than leaving the mesh in plain text, as Istio's ztunnel does."""
        if self._retry is not None:
            self._retry.cancel()
        for task in list(self._tasks):
            task.cancel()
        async with self._lock:
            for pod in self.pods.values():
                pod.capture.close()
                pod.close_inbound()
                pod.ns.close()
            self.pods.clear()
