"""One certificate request: key, CSR and a check of the CA's chain, optionally in a child process.

``cryptography`` costs a long-running ztunnel about 9 MiB resident for work it does once per
certificate lifetime, so a short-lived child (``python -m mesh.identity.issuance URI``) can do
it instead. The private key crosses only a pipe, never a file, and only after the chain the CA
returned has been verified. The exchange is JSON lines: the child sends ``{"csr"}``, the parent
answers ``{"chain"}`` (leaf first, root last), the child replies with the key and the leaf's
serial and validity, or ``{"error"}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import CAError, IdentityError, MeshError
from mesh.identity.spiffe import Identity, parse_identity

HELPER_TIMEOUT = 30.0
Submit = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Issued:
    """The private key and the facts about the verified leaf that the ztunnel needs."""

    key_pem: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


def in_child_by_default() -> bool:
    """Use a child unless ``cryptography`` is loaded here anyway (then a child saves nothing)."""
    return "cryptography" not in sys.modules


async def request(
    identity: Identity,
    submit: Submit,
    in_child: bool | None = None,
    children: asyncio.Semaphore | None = None,
) -> Issued:
    """Generate a key, ``submit`` its CSR to the CA, verify the returned chain; CAError if bad.

    ``children`` bounds concurrent child processes (each is a whole interpreter for a moment).
    """
    if in_child_by_default() if in_child is None else in_child:
        if children is None:
            return await _request_in_child(identity, submit)
        async with children:
            return await _request_in_child(identity, submit)
    from mesh.identity import certs

    key = certs.generate_key()
    chain = await submit(certs.build_csr(key, identity))
    return verify(identity, certs.key_to_pem(key), chain)


def verify(identity: Identity, key_pem: bytes, chain: list[str]) -> Issued:
    """Check ``chain`` (leaf first, root last) issues ``identity``; imports ``cryptography``."""
    from mesh.identity import certs

    if len(chain) < 2:
        raise CAError(f"CA returned a chain of {len(chain)} certificates for {identity}")
    parsed = [c for pem in chain for c in certs.certs_from_pem(pem)]
    roots = certs.certs_from_pem(chain[-1])
    try:
        got = certs.verify_chain(parsed[: -len(roots)], roots)
    except IdentityError as exc:
        raise CAError(f"CA returned an invalid chain for {identity}: {exc}") from exc
    if got != identity:
        raise CAError(f"CA returned a certificate for {got}, asked for {identity}")
    leaf = parsed[0]
    return Issued(key_pem, leaf.serial_number, leaf.not_valid_before_utc, leaf.not_valid_after_utc)


async def _request_in_child(identity: Identity, submit: Submit) -> Issued:
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mesh.identity.issuance",
            identity.uri,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise CAError(f"cannot start the key generation helper: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None
    try:
        first = await _receive(child.stdout)
        chain = await submit(str(first["csr"]))
        child.stdin.write(json.dumps({"chain": chain}).encode() + b"\n")
        await child.stdin.drain()
        result = await _receive(child.stdout)
        return Issued(
            str(result["key"]).encode(),
            int(str(result["serial"])),
            dt.datetime.fromisoformat(str(result["not_before"])),
            dt.datetime.fromisoformat(str(result["not_after"])),
        )
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def _receive(stdout: asyncio.StreamReader) -> dict[str, object]:
    try:
        line = await asyncio.wait_for(stdout.readline(), HELPER_TIMEOUT)
        message = json.loads(line)
    except (TimeoutError, ValueError) as exc:
        raise CAError(f"key generation helper failed: {exc!r}") from exc
    if not isinstance(message, dict):
        raise CAError("key generation helper failed: it exited or answered nonsense")
    if "error" in message:
        raise CAError(str(message["error"]))
    return message


def _child(uri: str) -> int:
    from mesh.identity import certs

    def send(message: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        identity = parse_identity(uri)
        key = certs.generate_key()
        send({"csr": certs.build_csr(key, identity)})
        line = sys.stdin.readline()
        if not line:
            return 1  # the parent gave up (the CA refused): nothing to hand over
        issued = verify(identity, certs.key_to_pem(key), list(json.loads(line)["chain"]))
    except (MeshError, ValueError, KeyError, TypeError) as exc:
        send({"error": str(exc)})
        return 1
    send(
        {
            "key": issued.key_pem.decode(),
            "serial": str(issued.serial),
            "not_before": issued.not_before.isoformat(),
            "not_after": issued.not_after.isoformat(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
