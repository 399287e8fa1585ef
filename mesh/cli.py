"""``ambient ca`` and ``ambient ztunnel`` subcommands (wired into ``ambient`` by gateway/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cluster.errors import ClusterError
from mesh.errors import MeshError
from ports import PortInUse

log = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def add_subcommands(subparsers: argparse._SubParsersAction) -> dict[str, Command]:
    """Add ``ca`` and ``ztunnel`` to an argparse subparsers object; returns name -> handler."""
    ca = subparsers.add_parser("ca", help="run the mesh CA (Istio CreateCertificate over gRPC)")
    ca.add_argument("--trust-domain", default="cluster.local")
    ca.add_argument(
        "--state-dir", type=Path, default=Path("ca"), help="root key/cert and node tokens"
    )
    ca.add_argument(
        "-f", "--file", type=Path, default=Path("mesh.yaml"), help="mesh.yaml (Pods by node)"
    )
    ca.add_argument("--listen", default="127.0.0.1:15012", help="gRPC HOST:PORT")
    ca.add_argument(
        "--intermediate", action="store_true", help="sign leaves with an intermediate CA"
    )
    _add_cluster(ca)
    ca.add_argument(
        "--ztunnel-service-account",
        action="append",
        default=None,
        metavar="NAMESPACE/NAME",
        help="cluster mode: the ServiceAccount whose tokens authenticate ztunnels, as their node "
        "(repeatable; default ambient-system/ztunnel); any other ServiceAccount's token obtains "
        "only its own identity",
    )
    ca.add_argument(
        "--token-audience",
        default=None,
        help="cluster mode: the audience ServiceAccount tokens sent to the CA carry",
    )

    zt = subparsers.add_parser("ztunnel", help="run the node proxy (HBONE mTLS, L4 policy)")
    zt.add_argument("--node", required=True, help="this node's name (Pods' spec.nodeName)")
    zt.add_argument("-f", "--file", type=Path, default=None, help="mesh.yaml (or cluster mode)")
    _add_cluster(zt)
    zt.add_argument("--ca", default="127.0.0.1:15012", help="CA gRPC HOST:PORT")
    zt.add_argument(
        "--ca-root", type=Path, default=Path("ca/root-cert.pem"), help="CA root certificate"
    )
    zt.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="node bootstrap token, used until the node certificate is obtained "
        "(default: <ca-root dir>/tokens/<node>.token)",
    )
    zt.add_argument("--trust-domain", default="cluster.local")
    zt.add_argument("--hbone-port", type=int, default=15008)
    zt.add_argument(
        "--inbound-bind",
        default=None,
        help="bind HBONE on this address instead of each local pod IP (e.g. 0.0.0.0)",
    )
    zt.add_argument(
        "--capture",
        default="off",
        help="transparent outbound listener HOST:PORT for nftables REDIRECT, e.g. 0.0.0.0:15001",
    )
    zt.add_argument(
        "--in-pod-capture",
        action="store_true",
        help="cluster mode: redirect each enrolled local Pod's outbound TCP, and listen for it and "
        "for the Pod's HBONE, inside the Pod's network namespace (needs hostPID and privileges)",
    )
    zt.add_argument(
        "--in-pod-capture-port",
        type=int,
        default=15001,
        help="the capture port inside each Pod's network namespace",
    )
    zt.add_argument(
        "--forward",
        action="append",
        default=[],
        metavar="LOCALPORT=SVC.NS:PORT",
        help="explicit mode: a local listener carried over HBONE (repeatable)",
    )
    zt.add_argument(
        "--forward-as",
        default=None,
        metavar="NS/POD",
        help="local workload explicit-mode traffic is sent as (default: first local pod)",
    )
    zt.add_argument("--forward-host", default="127.0.0.1", help="address --forward listeners bind")
    zt.add_argument("--admin", default="127.0.0.1:15000")
    zt.add_argument("--metrics", default="0.0.0.0:15020")
    zt.add_argument("--ready", default="0.0.0.0:15021")
    zt.add_argument("--cert-ttl", type=int, default=86400, help="certificate lifetime in seconds")
    zt.add_argument(
        "--rotate-fraction",
        type=float,
        default=0.5,
        help="rotate after this fraction of the lifetime",
    )
    zt.add_argument("--pool-idle-timeout", type=float, default=300.0)
    for p in (ca, zt):
        p.add_argument("--log-level", default="INFO")
        p.add_argument(
            "--event-loop",
            choices=("auto", "uvloop", "asyncio"),
            default="auto",
            help="uvloop when installed (about 17%% less CPU per tunnelled byte) or asyncio",
        )
    return {"ca": run_ca, "ztunnel": run_ztunnel}


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    """Cluster mode: Pods, Services, ... from the Kubernetes API instead of mesh.yaml."""
    parser.add_argument("--kubeconfig", default=None, metavar="PATH", help="read the cluster")
    parser.add_argument(
        "--in-cluster", action="store_true", help="read the cluster this pod runs in"
    )


def _cluster_mode(args: argparse.Namespace, command: str) -> bool | None:
    """Whether the flags ask for cluster mode; None (after a message) when they conflict."""
    if args.kubeconfig is not None and args.in_cluster:
        print(f"{command}: --kubeconfig and --in-cluster are exclusive", file=sys.stderr)
        return None
    return args.kubeconfig is not None or args.in_cluster


def _setup(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _port_of(address: str) -> int | None:
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def _run(
    main: Callable[[asyncio.Event], object],
    event_loop: str = "auto",
    command: str = "ambient",
    settings: dict[int | None, str] | None = None,
) -> int:
    """Run ``main`` until SIGINT/SIGTERM; a port already taken is one line naming the port and
    the flag in ``settings`` (port -> flag) that chose it, and exit 1."""
    if event_loop != "asyncio":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            if event_loop == "uvloop":
                print("ambient: --event-loop uvloop: uvloop is not installed", file=sys.stderr)
                return 2

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await main(stop)  # type: ignore[misc]

    try:
        asyncio.run(runner())
    except (MeshError, ClusterError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    except PortInUse as exc:
        exc.setting = exc.setting or (settings or {}).get(exc.port, "")
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_ca(args: argparse.Namespace) -> int:
    """``ambient ca``."""
    from mesh.ca.server import CAOptions, CertificateAuthority

    _setup(args)
    cluster = _cluster_mode(args, "ambient ca")
    if cluster is None:
        return 2
    mesh_file = args.file if args.file.exists() and not cluster else None
    if mesh_file is None and not cluster:
        log.warning("%s not found: no node can obtain certificates until it exists", args.file)
    accounts = frozenset(args.ztunnel_service_account or ["ambient-system/ztunnel"])
    options = CAOptions(
        trust_domain=args.trust_domain,
        state_dir=args.state_dir,
        listen=args.listen,
        mesh_file=mesh_file,
        intermediate=args.intermediate,
        cluster=cluster,
        kubeconfig=args.kubeconfig,
        ztunnel_accounts=accounts,
        token_audience=args.token_audience,
    )

    async def main(stop: asyncio.Event) -> None:
        ca = CertificateAuthority(options)
        server = await ca.start()
        await stop.wait()
        await ca.stop(server)

    listen = {_port_of(args.listen): f"--listen {args.listen}"}
    return _run(main, args.event_loop, "ambient ca", listen)


def run_ztunnel(args: argparse.Namespace) -> int:
    """``ambient ztunnel``."""
    from mesh.ztunnel.node import Ztunnel, ZtunnelOptions
    from mesh.ztunnel.outbound import Forward

    _setup(args)
    try:
        forwards = tuple(Forward.parse(f) for f in args.forward)
    except MeshError as exc:
        print(f"ambient ztunnel: {exc}", file=sys.stderr)
        return 2
    cluster = _cluster_mode(args, "ambient ztunnel")
    if cluster is None:
        return 2
    if cluster == (args.file is not None):
        print("ambient ztunnel: give -f mesh.yaml or --kubeconfig/--in-cluster", file=sys.stderr)
        return 2
    if args.in_pod_capture and not cluster:
        print("ambient ztunnel: --in-pod-capture is for cluster mode", file=sys.stderr)
        return 2
    options = ZtunnelOptions(
        node=args.node,
        mesh_file=args.file,
        cluster=cluster,
        kubeconfig=args.kubeconfig,
        ca_address=args.ca,
        ca_root=args.ca_root,
        token_file=args.token_file,
        trust_domain=args.trust_domain,
        hbone_port=args.hbone_port,
        inbound_bind=args.inbound_bind,
        capture=None if args.capture == "off" else args.capture,
        in_pod_capture=args.in_pod_capture,
        in_pod_capture_port=args.in_pod_capture_port,
        forwards=forwards,
        forward_as=args.forward_as,
        forward_host=args.forward_host,
        admin=args.admin,
        metrics=args.metrics,
        ready=args.ready,
        cert_ttl=args.cert_ttl,
        rotate_fraction=args.rotate_fraction,
        pool_idle_timeout=args.pool_idle_timeout,
    )

    async def main(stop: asyncio.Event) -> None:
        ztunnel = Ztunnel(options)
        await ztunnel.start()
        # Everything allocated so far (modules, state, certificates) lives for the whole run:
        # moving it out of the collector's generations keeps full collections, and the latency
        # spikes they cause on the data path, small.
        gc.collect()
        gc.freeze()
        await stop.wait()
        await ztunnel.stop()

    # Later flags win a port two of them name (the bind of either fails the same way).
    settings: dict[int | None, str] = {args.hbone_port: f"--hbone-port {args.hbone_port}"}
    for flag in ("capture", "admin", "metrics", "ready"):
        value = getattr(args, flag)
        if value != "off":
            settings[_port_of(value)] = f"--{flag} {value}"
    for fwd, text in zip(forwards, args.forward, strict=True):
        settings[fwd.local_port] = f"--forward {text}"
    return _run(main, args.event_loop, "ambient ztunnel", settings)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m mesh ca|ztunnel ...``."""
    parser = argparse.ArgumentParser(prog="python -m mesh")
    commands = add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return commands[args.command](args)
