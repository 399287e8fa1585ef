"""``ambient sim`` command line (filled by the simulator's implementation)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's arguments."""
    parser.add_argument("--listen", default="127.0.0.2:8000", help="HOST:PORT of the first replica")


def run(args: argparse.Namespace) -> int:
    """Run until interrupted."""
    raise SystemExit("ambient sim: not built yet")
