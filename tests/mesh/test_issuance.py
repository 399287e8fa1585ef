"""Certificate requests with key generation and chain checks in a child process."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from mesh.errors import CAError
from mesh.identity import SpiffeId, certs, issuance

SLEEP = SpiffeId("cluster.local", "default", "sleep")

OTHER = SpiffeId("cluster.local", "default", "other")


@pytest.fixture(scope="module")
def signer() -> certs.Signer:
    key = certs.generate_key()
    return certs.Signer(certs.create_root("cluster.local", key), key)


@pytest.mark.parametrize("in_child", [True, False])
async def test_a_chain_for_another_identity_is_refused(
    signer: certs.Signer, in_child: bool
) -> None:
    async def submit(csr: str) -> list[str]:
        _, public = certs.csr_identity(csr)
        leaf = certs.issue_svid(OTHER, public, signer, dt.timedelta(hours=1))
        return [certs.cert_to_pem(leaf), certs.cert_to_pem(signer.cert)]

    with pytest.raises(CAError, match=r"certificate for .*other, asked for .*sleep"):
        await issuance.request(SLEEP, submit, in_child)


async def test_a_refused_request_ends_the_child(signer: certs.Signer) -> None:
    async def submit(csr: str) -> list[str]:
        raise CAError("CreateCertificate: PERMISSION_DENIED")

    with pytest.raises(CAError, match="PERMISSION_DENIED"):
        await issuance.request(SLEEP, submit, in_child=True)


async def test_a_child_holds_a_slot_while_it_runs(signer: certs.Signer) -> None:
    children = asyncio.Semaphore(1)
    seen: list[bool] = []

    async def submit(csr: str) -> list[str]:
        seen.append(children.locked())  # the only slot is taken by this request's child
        _, public = certs.csr_identity(csr)
        leaf = certs.issue_svid(SLEEP, public, signer, dt.timedelta(hours=1))
        return [certs.cert_to_pem(leaf), certs.cert_to_pem(signer.cert)]

    issued = await asyncio.gather(
        *(issuance.request(SLEEP, submit, True, children) for _ in range(3))
    )
    assert seen == [True, True, True]
    assert not children.locked()
    assert len({i.serial for i in issued}) == 3
