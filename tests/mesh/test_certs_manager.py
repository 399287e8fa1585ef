"""Certificate manager: rotation at a fraction of the lifetime, back-off, keep a valid cert."""

from __future__ import annotations

import asyncio
import datetime as dt

from mesh.ca.client import IssuedCertificate
from mesh.errors import CAError
from mesh.identity import SpiffeId, certs
from mesh.ztunnel.certs import CertManager

IDENT = SpiffeId("cluster.local", "default", "sleep")


class FlakyIssuer:
    """Issues from a local signer; fails the calls whose numbers are in ``fail``."""

    def __init__(self, fail: set[int]) -> None:
        key = certs.generate_key()
        self.signer = certs.Signer(certs.create_root("cluster.local", key), key)
        self.fail = fail
        self.calls = 0

    async def issue(
        self, identity: SpiffeId, ttl_seconds: int = 0, timeout: float = 10.0
    ) -> IssuedCertificate:
        self.calls += 1
        if self.calls in self.fail:
            raise CAError("CA unavailable")
        key = certs.generate_key()
        leaf = certs.issue_svid(
            identity, key.public_key(), self.signer, dt.timedelta(seconds=ttl_seconds)
        )
        return IssuedCertificate(
            identity,
            certs.key_to_pem(key),
            (certs.cert_to_pem(leaf),),
            (certs.cert_to_pem(self.signer.cert),),
            leaf.serial_number,
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
        )


async def test_rotation_with_backoff_keeps_the_valid_certificate() -> None:
    issuer = FlakyIssuer(fail={2, 3, 4})
    manager = CertManager(issuer, ttl_seconds=60, rotate_fraction=0.01, backoff_initial=0.05)
    manager.ensure([IDENT])
    first = await manager.get(IDENT)
    serial = first.issued.leaf.serial_number
    # refresh is due after ~0.6 s; the next three attempts fail and back off (0.05, 0.1, 0.2 s)
    await asyncio.sleep(0.8)
    current = manager.current(IDENT)
    assert current is not None, "a valid certificate is kept while refreshing fails"
    for _ in range(40):
        if manager.rotations:
            break
        await asyncio.sleep(0.05)
    assert manager.rotations == 1
    assert issuer.calls == 5
    rotated = manager.current(IDENT)
    assert rotated is not None and rotated.issued.leaf.serial_number != serial
    assert manager.dump()[0]["certChain"][0]["serialNumber"] == format(
        rotated.issued.leaf.serial_number, "x"
    )
    await manager.close()


async def test_unmanaged_identity_is_an_error() -> None:
    manager = CertManager(FlakyIssuer(set()))
    try:
        await manager.get(IDENT, timeout=0.1)
    except CAError as exc:
        assert "no certificate is managed" in str(exc)
    else:
        raise AssertionError("expected CAError")
