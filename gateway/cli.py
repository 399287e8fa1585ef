"""The ``ambient`` command: one CLI, one process per role."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.log_format import configure_logging
from gateway.proxy.options import ProxyOptions

if TYPE_CHECKING:
    from gateway.controller import ClusterOptions

log = logging.getLogger("gateway.cli")

Handler = Callable[[argparse.Namespace], int]


_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "ki": 1024,
    "m": 1000**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gi": 1024**3,
}


def _byte_size(text: str) -> int:
    """A size in bytes, with an optional Kubernetes-style suffix: 4Mi, 512Ki, 10M, 1000."""
    number = text.rstrip("KMGikmg")
    unit = text[len(number) :].lower()
    if not number.isdigit() or unit not in _SIZE_UNITS or int(number) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size in bytes (e.g. 4Mi, 512Ki, 1000000)"
        )
    return int(number) * _SIZE_UNITS[unit]


def _add_files(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        required=required,
        metavar="FILE",
        help="Kubernetes YAML with Gateway, HTTPRoute, Service, EndpointSlice, ... (repeatable)",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless there is none to tell (None, off, required)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, False) or not action.help:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ambient (sub)command's parser: its help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    """Cluster mode: read the Kubernetes API instead of files (gateway.controller)."""
    group = parser.add_argument_group("cluster mode (instead of -f)")
    group.add_argument(
        "--kubeconfig", metavar="PATH", help="read resources from the cluster this kubeconfig names"
    )
    group.add_argument(
        "--in-cluster",
        action="store_true",
        help="read resources from the cluster this pod runs in (its ServiceAccount)",
    )
    group.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "ambient-system"),
        help="namespace of the Lease that elects the replica writing statuses",
    )


def _cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster options the flags give, None in file mode; raises ValueError on a mix."""
    from gateway.controller import ClusterOptions

    cluster = args.kubeconfig is not None or args.in_cluster
    if cluster and args.files:
        raise ValueError("-f and --kubeconfig/--in-cluster are exclusive")
    if args.kubeconfig is not None and args.in_cluster:
        raise ValueError("--kubeconfig and --in-cluster are exclusive")
    if not cluster and not args.files:
        raise ValueError("give -f FILE (repeatable), --kubeconfig PATH or --in-cluster")
    if not cluster:
        return None
    return ClusterOptions(args.kubeconfig, lease_namespace=args.lease_namespace)


def _version() -> str:
    try:
        return metadata.version("ambient-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The argument parser for every subcommand, and each subcommand's handler."""
    parser = _Parser(
        prog="ambient",
        description="The ambient command: one CLI, one process per role. "
        "Run 'ambient COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"ambient {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    handlers: dict[str, Handler] = {"gateway": _gateway, "check": _check, "demo": _demo}

    gw = sub.add_parser("gateway", help="serve the Gateway's listeners from Gateway API YAML")
    _add_files(gw, required=False)
    _add_cluster(gw)
    gw.add_argument(
        "--admin", default="127.0.0.1:15000", help="admin API HOST:PORT ('off' to disable)"
    )
    gw.add_argument("--bind-address", default="0.0.0.0", help="address the listeners bind")
    gw.add_argument("--workers", type=int, default=1, help="processes sharing the listeners")
    gw.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    gw.add_argument("--access-log", action="store_true", help="log one line per request")
    gw.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="directory where plugins keep state across restarts (e.g. a canary's step)",
    )
    gw.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="seconds without a byte either way before a request is cut (no total timeout)",
    )
    gw.add_argument(
        "--header-timeout",
        type=float,
        default=ProxyOptions().header_timeout,
        help="seconds a request head (or HTTP/2 preface) may take to arrive; then 408 and close",
    )
    gw.add_argument(
        "--max-request-body",
        type=_byte_size,
        default=ProxyOptions().max_request_body,
        metavar="BYTES",
        help="largest request body a stage or backend that reads whole bodies accepts "
        "(e.g. 4Mi, 512Ki, 1000000; beyond it: 413)",
    )

    mesh = gw.add_argument_group(
        "waypoint mode", "serve as an istio-waypoint Gateway's instance on a node (HBONE in/out)"
    )
    mesh.add_argument(
        "--node", default=None, help="this node's name: turns waypoint mode on (needs --ca)"
    )
    mesh.add_argument("--ca", default="127.0.0.1:15012", help="mesh CA gRPC HOST:PORT")
    mesh.add_argument("--ca-root", type=Path, default=Path("ca/root-cert.pem"))
    mesh.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="node bootstrap token (default: <ca-root dir>/tokens/<node>.token); in cluster mode "
        "the waypoint's projected ServiceAccount token, good for its own identity only",
    )
    mesh.add_argument("--trust-domain", default="cluster.local")
    mesh.add_argument("--hbone-port", type=int, default=15008)
    mesh.add_argument(
        "--waypoint", default=None, metavar="NS/NAME", help="which waypoint Gateway, if several"
    )

    check = sub.add_parser("check", help="validate config and print each route's status")
    _add_files(check)

    demo = sub.add_parser("demo", help="run the gateway on the bundled example with echo backends")
    demo.add_argument("--port", type=int, default=8080, help="the demo listener's port")
    demo.add_argument("--admin", default="127.0.0.1:15000", help="admin API HOST:PORT")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="exit after this many seconds (none: serve until Ctrl-C)",
    )
    handlers.update(_mesh_commands(sub))
    handlers.update(_plugin_commands(sub, handlers))
    return parser, handlers


def _mesh_commands(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """The mesh's own subcommands: ``ca`` and ``ztunnel``."""
    from mesh.cli import add_subcommands

    return add_subcommands(sub)


def _plugin_commands(
    sub: argparse._SubParsersAction, taken: dict[str, Handler]
) -> dict[str, Handler]:
    """The subcommands loaded plugins registered; a name already taken is a PluginError."""
    from gateway.plugins import PluginError, commands

    out: dict[str, Handler] = {}
    for command in commands():
        if command.name in taken:
            raise PluginError(
                f"plugin {command.plugin!r}: command {command.name!r} is already an ambient command"
            )
        command.configure(sub.add_parser(command.name, help=command.help))
        out[command.name] = command.handler
    return out


def _gateway(args: argparse.Namespace) -> int:
    from cluster.errors import ClusterError
    from gateway.config import ConfigError
    from gateway.plugins import PluginError
    from gateway.server import GatewayOptions, parse_hostport, run
    from gateway.waypoint.runtime import WaypointOptions
    from mesh.errors import MeshError

    if args.workers < 1:
        print("ambient gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        admin = None if args.admin == "off" else parse_hostport(args.admin)
    except ValueError as exc:
        print(f"ambient gateway: --admin: {exc}", file=sys.stderr)
        return 2
    waypoint = None
    if args.node is not None:
        if args.workers != 1:
            print("ambient gateway: waypoint mode (--node) runs one worker", file=sys.stderr)
            return 2
        waypoint = WaypointOptions(
            node=args.node,
            ca_address=args.ca,
            ca_root=args.ca_root,
            token_file=args.token_file,
            trust_domain=args.trust_domain,
            hbone_port=args.hbone_port,
            waypoint=args.waypoint,
            own_token=args.kubeconfig is not None or args.in_cluster,
        )
    try:
        cluster = _cluster_options(args)
    except ValueError as exc:
        print(f"ambient gateway: {exc}", file=sys.stderr)
        return 2
    if cluster is not None and args.workers > 1:
        print("ambient gateway: cluster mode serves with --workers 1", file=sys.stderr)
        return 2
    options = GatewayOptions(
        files=args.files or [],
        waypoint=waypoint,
        cluster=cluster,
        admin=admin,
        bind_address=args.bind_address,
        workers=args.workers,
        log_format=args.log_format,
        access_log=args.access_log,
        state_dir=args.state_dir,
        proxy=ProxyOptions(
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            max_request_body=args.max_request_body,
        ),
    )
    try:
        run(options)
    except ConfigError as exc:
        print(f"ambient gateway: invalid config: {exc}", file=sys.stderr)
        return 1
    except (PluginError, MeshError) as exc:
        print(f"ambient gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ambient gateway: {exc}", file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(f"ambient gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from gateway.compile import format_status
    from gateway.config import ConfigError
    from gateway.reload import build_snapshot

    try:
        snapshot = build_snapshot(args.files, version=1)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    print(format_status(snapshot.statuses))
    return 0 if all(status.valid for status in snapshot.statuses) else 1


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo
    from gateway.server import parse_hostport

    return run_demo(port=args.port, admin=parse_hostport(args.admin), duration=args.duration)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ambient`` console script: plugins first (they add subcommands)."""
    from gateway.plugins import PluginError, load_plugins

    # Logging is set up before the plugins load so that what they register is logged in the
    # format asked for; the full parser (which validates the flag) needs the plugins' commands.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--log-format", default="text")
    configure_logging(early.parse_known_args(argv)[0].log_format)
    try:
        load_plugins()
        parser, handlers = build_parser()
    except PluginError as exc:
        print(f"ambient: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
