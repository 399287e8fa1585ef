"""Providers over https: verified against the trust store (here a test CA named by
``SSL_CERT_FILE``, as OpenSSL reads it), refused when the certificate does not verify. The
provider is a local stand-in for the hosted OpenAI API (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.certs import Authority, authority
from tests.fixtures.llm_gateway import StartLlm
from tests.fixtures.llm_providers import Served, StandIn, serve, stop

BACKEND = """
providers:
- {name: openai, type: OpenAI, url: "%s"}
models:
- {name: gpt-4o-mini, provider: openai}
"""


@pytest.fixture
async def tls_stand_in(tmp_path: Path) -> AsyncIterator[StandIn]:
    leaf = authority().issue("localhost")
    cert, key = tmp_path / "provider.crt", tmp_path / "provider.key"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    stand_in = StandIn("openai")
    served: Served = await serve(stand_in, (str(cert), str(key)))
    yield stand_in
    await stop(served)


async def chat(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{base}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )


async def test_an_https_provider_is_verified_with_the_trust_store(
    start_llm: StartLlm, tls_stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority().pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # read when the process's client is made
    gateway = await start_llm(BACKEND % tls_stand_in.url)
    answer = await chat(gateway.base)
    assert answer.status_code == 200, answer.text
    assert len(tls_stand_in.requests) == 1


async def test_an_untrusted_provider_certificate_is_refused(
    start_llm: StartLlm, tls_stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "other-ca.pem"
    ca.write_bytes(Authority("Another CA").pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    gateway = await start_llm(BACKEND % tls_stand_in.url)
    answer = await chat(gateway.base)
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "provider openai unreachable (TLS: the certificate did not verify" in message
    assert not tls_stand_in.requests
