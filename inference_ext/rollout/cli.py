"""``ambient rollout status|pause|resume|promote|abort [NAME]``: a gateway's rollouts through
its admin API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

ACTIONS = ("status", "pause", "resume", "promote", "abort")


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``ambient rollout`` arguments."""
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument(
        "name", nargs="?", help="rollout NAME or NAMESPACE/NAME (status: all when absent)"
    )
    parser.add_argument("--admin", default="127.0.0.1:15000", help="the gateway's admin HOST:PORT")
    parser.add_argument("--json", action="store_true", help="print the admin API's JSON")


def run(args: argparse.Namespace) -> int:
    """Ask the admin API; print the rollouts as a table (or JSON); 1 when it refuses."""
    base = f"http://{args.admin}/plugins/rollouts"
    if args.action != "status" and not args.name:
        print(f"ambient rollout {args.action}: which rollout? (NAME)", file=sys.stderr)
        return 2
    try:
        if args.action == "status":
            response = httpx.get(f"{base}/{args.name}" if args.name else base, timeout=10)
        else:
            response = httpx.post(f"{base}/{args.name}/{args.action}", timeout=30)
    except httpx.HTTPError as exc:
        print(
            f"ambient rollout: cannot reach the admin API at {args.admin}: {exc}", file=sys.stderr
        )
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text.strip()}
    if response.status_code != 200:
        print(f"ambient rollout {args.action}: {body.get('error', body)}", file=sys.stderr)
        return 1
    if args.json:
        print(response.text)
        return 0
    rollouts = body.get("rollouts", [body])
    print("\n\n".join(format_rollout(r) for r in rollouts) if rollouts else "no rollouts")
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_rollout(rollout: dict[str, Any]) -> str:
    """One rollout: its state, then the last interval's checks as a table."""
    lines = [
        f"{rollout['namespace']}/{rollout['name']}: {rollout['phase']}, step {rollout['step']}"
        f"/{len(rollout.get('steps', []))}, canary {rollout['canary']} {rollout['weight']}%"
        f", stable {rollout['stable']} {100 - rollout['weight']}%"
        f", failures {rollout['failures']}/{rollout.get('threshold', '?')}",
        f"  {rollout['message']}" if rollout.get("message") else "",
    ]
    analysed = [h for h in rollout.get("history", []) if h.get("checks")]
    if analysed:
        rows = [("METRIC", "STABLE", "CANARY", "VALUE", "LIMIT", "VERDICT")]
        rows += [
            (
                c["metric"],
                _number(c["stable"]),
                _number(c["canary"]),
                _number(c["value"]),
                c["limit"],
                c["verdict"],
            )
            for c in analysed[-1]["checks"]
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                  for row in rows]  # fmt: skip
    return "\n".join(line for line in lines if line)
