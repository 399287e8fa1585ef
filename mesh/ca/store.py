"""CA key material in ``--state-dir``: root (and optional intermediate), node bootstrap tokens."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from mesh.errors import CAError
from mesh.identity import certs

log = logging.getLogger(__name__)

ROOT_KEY, ROOT_CERT = "root-key.pem", "root-cert.pem"
INTERMEDIATE_KEY, INTERMEDIATE_CERT = "intermediate-key.pem", "intermediate-cert.pem"
TOKENS_DIR = "tokens"


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable only by its owner (0600), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class CAMaterial:
    """The signing chain: the signer (root or intermediate) and the roots to publish."""

    signer: certs.Signer
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate

    def chain_pems(self) -> list[str]:
        """Intermediates then root, as PEM strings, to follow an issued leaf."""
        return [certs.cert_to_pem(c) for c in (*self.intermediates, self.root)]


def load_or_create(state_dir: Path, trust_domain: str, intermediate: bool = False) -> CAMaterial:
    """Load the CA from ``state_dir``; on first start create root (and intermediate), 0600 keys."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root_key_path, root_cert_path = state_dir / ROOT_KEY, state_dir / ROOT_CERT
    if root_key_path.exists() != root_cert_path.exists():
        raise CAError(f"{state_dir}: exactly one of {ROOT_KEY} and {ROOT_CERT} exists")
    if not root_key_path.exists():
        log.info("creating root CA for trust domain %s in %s", trust_domain, state_dir)
        key = certs.generate_key()
        cert = certs.create_root(trust_domain, key)
        _write_private(root_key_path, certs.key_to_pem(key))
        root_cert_path.write_text(certs.cert_to_pem(cert))
    root_key = certs.key_from_pem(root_key_path.read_bytes())
    (root,) = certs.certs_from_pem(root_cert_path.read_text())[:1]
    if not intermediate:
        return CAMaterial(certs.Signer(root, root_key), (), root)
    int_key_path, int_cert_path = state_dir / INTERMEDIATE_KEY, state_dir / INTERMEDIATE_CERT
    if not int_key_path.exists() or not int_cert_path.exists():
        log.info("creating intermediate CA in %s", state_dir)
        key = certs.generate_key()
        cert = certs.create_intermediate(trust_domain, key, root, root_key)
        _write_private(int_key_path, certs.key_to_pem(key))
        int_cert_path.write_text(certs.cert_to_pem(cert))
    int_key = certs.key_from_pem(int_key_path.read_bytes())
    (int_cert,) = certs.certs_from_pem(int_cert_path.read_text())[:1]
    return CAMaterial(certs.Signer(int_cert, int_key), (int_cert,), root)


class TokenStore:
    """Node bootstrap tokens, one 0600 file per node: ``<state-dir>/tokens/<node>.token``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / TOKENS_DIR
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, node: str) -> Path:
        """Where a node's token lives."""
        if not node or "/" in node or node.startswith("."):
            raise CAError(f"invalid node name {node!r}")
        return self.directory / f"{node}.token"

    def ensure(self, node: str) -> Path:
        """Create a token for the node unless it already has one."""
        path = self.path(node)
        if not path.exists():
            _write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
            log.info("created bootstrap token for node %s at %s", node, path)
        return path

    def node_for(self, token: str) -> str | None:
        """The node a presented token belongs to, compared in constant time."""
        found = None
        for path in self.directory.glob("*.token"):
            expected = path.read_text().strip()
            if expected and hmac.compare_digest(expected.encode(), token.encode()):
                found = path.stem
        return found
